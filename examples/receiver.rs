//! The receiver: an axum server that takes Polytomic deliveries and writes each accepted batch
//! to stdout as one line of JSON.
//!
//! ```sh
//! cargo run --release --example receiver
//! ```
//!
//! - `POLYTOMIC_WEBHOOK_SECRET`: the secret entered in the Polytomic webhook connection, one
//!   secret taken whole (a comma is part of it). Unset, a random one is made up and printed to
//!   stderr with a `curl` command that sends a sample delivery; set but empty, the example
//!   refuses to start.
//! - `POLYTOMIC_WEBHOOK_PREVIOUS_SECRET`: while rotating, the secret being replaced, accepted
//!   too until it is removed. Set but empty, or set without `POLYTOMIC_WEBHOOK_SECRET`, the
//!   example refuses to start.
//! - `POLYTOMIC_EVENTS_SECRET`: the signing secret of the organisation's Events webhook. Set,
//!   `POST /webhooks/polytomic/events` takes signed events (`Polytomic-Signature`), each
//!   event id once; unset, that route does not exist (404) and the start-up log says so.
//! - `POLYTOMIC_EVENTS_PREVIOUS_SECRET`: while rotating, the signing secret being replaced.
//! - `POLYTOMIC_EVENTS_REDIS_URL`: a Redis (`redis://HOST:PORT[/DB]`) where event ids are
//!   kept, so that replicas behind one address handle each event once between them. Unset,
//!   each process remembers the last 100,000 ids in memory. A value that is blank, not a
//!   Redis URL, or a Redis that cannot be reached at start-up stops the example (the message
//!   never shows the URL, which may hold a password).
//! - `POLYTOMIC_EVENTS_STORE`: `sqlite:PATH`, a SQLite file of its own where one receiver keeps
//!   its event ids, so that an event handled before a restart is still a duplicate after it.
//!   Not in that form, a file that is not the store's, or set beside
//!   `POLYTOMIC_EVENTS_REDIS_URL`: the example does not start.
//! - `POLYTOMIC_EVENTS_MAX_RECEIVED_BYTES`, `POLYTOMIC_EVENTS_MAX_DECODED_BYTES`: most bytes an
//!   event may have as received and once decoded (1048576 each); larger is 413.
//! - `POLYTOMIC_EVENTS_MAX_AGE_SECS`, `POLYTOMIC_EVENTS_MAX_SKEW_SECS`: how old (604800, the
//!   id store's TTL) and how far ahead (300) an event's signed `created_at` may be; beyond is
//!   422 `stale_event` or `event_in_future`. 0 turns a check off.
//! - `POLYTOMIC_WEBHOOK_ADDR`: where to listen, `127.0.0.1:3000` by default.
//! - `POLYTOMIC_WEBHOOK_METRICS_ADDR`: serve `GET /metrics` on this address instead of the
//!   webhook's port (where it is by default).
//! - `POLYTOMIC_WEBHOOK_MAX_IN_FLIGHT`: most deliveries handled at once (64), per route; one beyond it
//!   waits `POLYTOMIC_WEBHOOK_QUEUE_WAIT_MS` (1000) for a place, then gets 503 `overloaded`.
//! - `POLYTOMIC_WEBHOOK_MAX_DECODED_IN_FLIGHT`: most decoded bytes all deliveries (batches
//!   and events) hold at once (256 MiB); a delivery that would pass it is stopped and gets 503 `overloaded`.
//! - `POLYTOMIC_WEBHOOK_MAX_DRAINING`: most refused bodies read and thrown away at once (64),
//!   each for at most `POLYTOMIC_WEBHOOK_DRAIN_MS` (5000); a refusal beyond it is answered at
//!   once and its connection closed. A refused delivery holds no in-flight place.
//! - `POLYTOMIC_WEBHOOK_MAX_CONNECTIONS`: most connections open at once (4096); past it new
//!   connections wait to be accepted.
//! - `POLYTOMIC_WEBHOOK_OUTPUT_WAIT_MS`: how long a batch (or event) waits for its stdout line
//!   to be written (5000); then it gets 503, and `GET /readyz` answers 503 until stdout takes a
//!   line again. Lines are written on a thread of their own, so a reader that stops reading
//!   never stalls the server.
//! - `RUST_LOG`: log filter, `info` by default. Logs go to stderr, one line per delivery.
//!
//! Everything else uses the library defaults (timestamps up to five minutes old or one minute
//! ahead, 32 MiB bodies, …). `POST /webhooks/polytomic` is behind the layer; `GET /healthz`
//! answers 200 to anyone, `GET /readyz` 200 while the server can take deliveries, and
//! `GET /metrics` the delivery metrics in Prometheus's text format. A connection with no request in progress for 10 seconds is
//! closed, whatever state it stopped in. Each accepted `sync.records` batch becomes exactly one compact JSON
//! line on stdout (`{"id":…,"name":…,"records":[{"hash":…,"fields":{…}}],"metadata":{…}}`,
//! fields and metadata without the sender's indentation, their strings and numbers byte for
//! byte), flushed at once, so the output can be piped into another program. A batch that
//! cannot be written (stdout closed or on a full device) is answered 503 `batch_not_stored`:
//! when stdout is a file, the part of the line that was written is cut off again; on a pipe,
//! the next line starts on a fresh line. When stdout is appended to a file that ends in a
//! partial line (a receiver killed while writing it), that partial line is cut off at start-up
//! (a warning says so). Each new
//! organisation event becomes one line too:
//! `{"event_id":…,"type":…,"organization_id":…,"created_at":…,"payload":{…}}`. Ctrl-C or
//! SIGTERM stops accepting connections and lets the requests in flight finish.
//!
//! A setting it cannot use stops it at start-up with exit status 1 and one message on stderr
//! that names the variable, shows the value (never the secret's), and says how to fix it.

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use examples::startup::{
    self, EVENTS_REDIS_URL_VAR, EVENTS_SECRET_VAR, EVENTS_STORE_VAR, EventsStore, METRICS_ADDR_VAR,
    PREVIOUS_SECRET_VAR, SECRET_VAR,
};
use examples::{
    EVENTS_PATH, EventSink, Ops, REMEMBERED_EVENT_IDS, ServeOptions, Sink, WEBHOOK_PATH,
    events_router, init_logging, listen_addr, metrics_router, receiver_app_with, serve,
    shutdown_signal,
};
use polytomic_webhook::dedup::MemoryEventIdStore;
use polytomic_webhook::metrics::install_prometheus_recorder;
use polytomic_webhook::prelude::*;
use polytomic_webhook::readiness::Readiness;
use polytomic_webhook_store::lines::{LineOutput, LineWriter, batch_line, event_line};

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Display, not the Debug that returning the error from main would print: the
            // message names the variable and the fix.
            eprintln!("receiver: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let (secrets, generated) = secrets_from_env()?;
    let layer = PolytomicWebhookLayer::new(PolytomicWebhookConfig::default().secrets(secrets))?;
    let events = match startup::events_secrets()? {
        Some(secrets) => Some(PolytomicOrgEventsLayer::new(startup::events_config(
            secrets,
        )?)?),
        None => None,
    };
    // Only a receiver with the Events route opens (or connects to) an id store.
    let event_ids = match &events {
        Some(_) => startup::events_store().await?,
        None => EventsStore::Memory,
    };

    let metrics = install_prometheus_recorder()?;
    let metrics_addr = startup::metrics_addr()?;
    let limits = startup::server_limits()?;
    let serve_options = startup::serve_options()?;

    let out = stdout_lines(startup::output_wait()?)?;
    let listener = startup::bind(listen_addr()?).await?;
    let addr = listener.local_addr()?;
    let ready = out.clone();
    let mut ops = Ops {
        limits,
        // 503 while stdout takes no line (its reader stopped reading).
        readiness: Readiness::new(move || std::future::ready(ready.is_ready())),
        ..Ops::default()
    };
    match metrics_addr {
        Some(metrics_addr) => {
            let metrics_listener = startup::bind_var(METRICS_ADDR_VAR, metrics_addr).await?;
            let metrics_addr = metrics_listener.local_addr()?;
            tracing::info!("metrics on http://{metrics_addr}/metrics");
            // Ends with the process: the metrics outlive the deliveries being finished.
            tokio::spawn(serve(
                metrics_listener,
                metrics_router(metrics),
                ServeOptions::default(),
                std::future::pending(),
            ));
        }
        None => ops.metrics = Some(metrics),
    }
    if let Some(secret) = generated {
        eprintln!("{}", try_it(&secret, addr));
    }
    // Before saying so: a SIGTERM sent on seeing that line must meet the handler.
    let shutdown = shutdown_signal();
    tracing::info!("listening on http://{addr}{WEBHOOK_PATH}");

    let mut app = receiver_app_with(layer, print_batch(out.clone()), &ops);
    match events {
        Some(events) => {
            let sink = print_event(out.clone());
            let router = match event_ids {
                EventsStore::Redis(store) => {
                    tracing::info!("event ids are shared through {EVENTS_REDIS_URL_VAR}");
                    events_router(events, sink, &ops, store)
                }
                EventsStore::Sqlite(store) => {
                    tracing::info!("event ids are kept in the file {EVENTS_STORE_VAR} names");
                    events_router(events, sink, &ops, store)
                }
                EventsStore::Memory => {
                    let store = MemoryEventIdStore::new(REMEMBERED_EVENT_IDS);
                    events_router(events, sink, &ops, store)
                }
            };
            app = app.merge(router);
            tracing::info!("organisation events on http://{addr}{EVENTS_PATH}");
        }
        None => {
            tracing::info!("{EVENTS_SECRET_VAR} is not set: the events route {EVENTS_PATH} is off");
        }
    }
    serve(listener, app, serve_options, shutdown).await;
    Ok(())
}

/// Writes each new event as one JSON line, like [`print_batch`]; an event that cannot be
/// written is answered 503, so Polytomic sends it again.
fn print_event(out: LineWriter) -> EventSink {
    Arc::new(move |event| print_line(out.clone(), event_line(event)))
}

/// Writes each batch as one compact JSON line and flushes it, so a reader downstream sees it
/// at once. A batch that cannot be written is answered 503 `batch_not_stored`, never
/// acknowledged.
fn print_batch(out: LineWriter) -> Sink {
    Arc::new(move |batch| print_line(out.clone(), batch_line(batch)))
}

/// Hands the line to stdout's writer thread, which writes each line whole, so concurrent
/// deliveries never interleave within a line; the delivery waits for it without holding a
/// runtime worker, at most `POLYTOMIC_WEBHOOK_OUTPUT_WAIT_MS`.
fn print_line(out: LineWriter, line: serde_json::Result<Vec<u8>>) -> examples::SinkFuture<'static> {
    Box::pin(async move {
        out.append(line?).await?;
        Ok(())
    })
}

/// Standard output's line writer; a partial last line left in the file it is appended to (by
/// a process killed while writing it) is cut off first.
fn stdout_lines(wait: std::time::Duration) -> Result<LineWriter, Box<dyn Error>> {
    let out = LineOutput::stdout().map_err(|error| format!("cannot use stdout: {error}"))?;
    if out.repaired() > 0 {
        tracing::warn!(
            bytes = out.repaired(),
            "stdout's file ended in a partial line, never acknowledged; cut it off"
        );
    }
    Ok(LineWriter::spawn(out, wait)
        .map_err(|error| format!("cannot start stdout's writer: {error}"))?)
}

/// The configured secrets, or a freshly made-up one (returned too, so it can be shown).
///
/// Each variable holds exactly one secret: splitting on a separator would turn a secret that
/// contains it into shorter ones, each of them accepted.
fn secrets_from_env() -> Result<(SecretSet, Option<String>), Box<dyn Error>> {
    // Checked whole, so a blank or unusable value stops the example with a message naming
    // the variable instead of falling back to a made-up secret.
    let previous = startup::secret_var(PREVIOUS_SECRET_VAR)?;
    if let Some(current) = startup::secret_var(SECRET_VAR)? {
        let mut set = SecretSet::from(current);
        if let Some(previous) = previous {
            set = set.with(previous);
        }
        return Ok((set, None));
    }
    if previous.is_some() {
        return Err(startup::previous_without_current().into());
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|error| format!("no random source: {error}"))?;
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok((SecretSet::from(Secret::new(secret.clone())?), Some(secret)))
}

/// Instructions for a server whose secret was made up: the secret, and a command that sends a
/// gzipped sample delivery (no `Content-Encoding`, like Polytomic's) with a fresh timestamp.
fn try_it(secret: &str, addr: SocketAddr) -> String {
    const SAMPLE: &str = r#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7","name":"Sample sync","records":[{"hash":"b7421c6c57bd49f7","fields":{"email":"ada@example.com","plan":"pro"}}],"metadata":{}}}"#;
    format!(
        "POLYTOMIC_WEBHOOK_SECRET is not set; using the random secret {secret}\n\
         Send a sample delivery with:\n\n\
         printf '%s' '{SAMPLE}' | gzip | curl -sS --data-binary @- \\\n  \
         -H 'Content-Type: application/json' \\\n  \
         -H 'Authorization: Bearer {secret}' \\\n  \
         -H \"Polytomic-Signature-Timestamp: $(date -u +%Y-%m-%dT%H:%M:%SZ)\" \\\n  \
         http://{addr}{WEBHOOK_PATH}\n"
    )
}
