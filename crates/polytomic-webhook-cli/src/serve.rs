//! `serve`: the library's receiver with its defaults, writing each accepted batch as a line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use polytomic_webhook::dedup::{DedupLayer, EventIdStore, MemoryEventIdStore};
use polytomic_webhook::handler_panicked;
use polytomic_webhook::limit::{
    DEFAULT_DRAIN_TIME, DEFAULT_MAX_DECODED_IN_FLIGHT, DEFAULT_MAX_DRAINING, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_QUEUE_WAIT, DecodedBudgetLayer, InFlightLimitLayer, ServerLimits,
};
use polytomic_webhook::metrics::{
    PrometheusHandle, install_prometheus_recorder, prometheus_answer,
};
use polytomic_webhook::prelude::*;
use polytomic_webhook::problem::{Problem, ProblemCode};
use polytomic_webhook::readiness::{NOT_READY, Readiness};
use polytomic_webhook::server::{MAX_CONNECTIONS, ServeOptions, serve, shutdown_signal};
use polytomic_webhook_store::lines::{
    DEFAULT_WAIT, LineOutput, LineWriter, batch_line, event_line,
};
use polytomic_webhook_store::{Durability, Identity, RedisEventIdStore, Sink, SinkUrl, store};
use tower::util::MapResponseLayer;
use tower_http::catch_panic::CatchPanicLayer;

use crate::{EVENTS_PATH, EXIT_FAILED, EXIT_USAGE, NAME, WEBHOOK_PATH, batches, plural};

#[derive(Args)]
#[command(
    about = "Receive Polytomic deliveries and write each accepted batch as one JSON line",
    long_about = "Receive Polytomic deliveries and write each accepted batch as one JSON line.\n\n\
        A ready receiver on the library's defaults: the bearer secret and a five-minute \
        timestamp window are checked before the body is read, gzip bodies are decoded within \
        limits, and each valid `sync.records` batch is appended to --out as one line \
        (`{\"id\":…,\"name\":…,\"records\":[{\"hash\":…,\"fields\":{…}}],\"metadata\":{…}}`, \
        fields and metadata compact, their strings and numbers byte for byte) before it is \
        acknowledged with 200. A batch that cannot be written completely is answered 503 \
        `batch_not_stored`, and a partial line is cut off again, so the file stays JSON Lines \
        (on a pipe, the next line starts on a fresh line); a file that ends in a partial line \
        (a serve killed while writing it) is cut back to its last whole line at start-up, with \
        a warning. --fsync also waits until the line is on disk. Lines are written on a \
        thread of their own: a batch whose line is not written within --output-wait-ms (a \
        reader that stopped reading) is answered 503 `batch_not_stored`, its line never \
        written if its write had not started, and GET /readyz answers 503 until the output \
        takes lines again; --out FIFO listens at once and opens the FIFO when a reader does. Refusals are problem+json \
        answers. GET /healthz answers 200 while the process serves, GET /readyz 200 while \
        the receiver can take deliveries, and \
        GET /metrics the delivery metrics in Prometheus's text format (on --metrics-addr \
        when given); a client that takes over 10 seconds to send a request's headers is \
        disconnected. Prints \
        `listening on http://ADDR` to standard error once bound, and a summary on Ctrl-C \
        (or SIGTERM).\n\n\
        With --sink URL instead of --out, each record is stored once per change in SQLite \
        (`sqlite:PATH`) or Redis (`redis://HOST:PORT[/DB][?stream=NAME]`), identified by \
        --key-field or else by its hash, and the answer is 200 \
        `{\"accepted\":N,\"stored\":S,\"unchanged\":U,\"superseded\":P}` (P: records followed \
        in the batch by a later one of the same identity, which alone is stored), or 503 \
        `sink_unavailable` when the sink fails; `dump` prints what a sink holds. serve listens \
        at once and opens the sink meanwhile (SQLite reads every identity it holds first): until \
        it is open, deliveries and GET /readyz are answered 503 `not_ready`; a sink that cannot \
        be opened stops serve with exit status 1.",
    after_help = "Examples:\n  \
        polytomic-webhook serve --secret s3cret\n  \
        polytomic-webhook serve --secret s3cret --addr 0.0.0.0:8080 --out batches.jsonl\n  \
        polytomic-webhook serve --secret new-secret --previous-secret old-secret\n  \
        polytomic-webhook serve --secret s3cret --events-secret whsec-events\n  \
        polytomic-webhook serve --secret s3cret --sink sqlite:records.db --key-field id\n\n\
        Exit status: 0 after Ctrl-C; 1 when the address cannot be bound, the output fails or \
        the sink cannot be opened; \
        2 bad arguments."
)]
pub(crate) struct ServeArgs {
    /// The secret of the webhook connection; deliveries must present it as a bearer token.
    /// The whole value is one secret: a comma is part of it, not a separator.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,

    /// While rotating: the connection's previous secret, accepted as well as --secret until
    /// Polytomic uses the new one. One secret, verbatim, like --secret.
    #[arg(
        long,
        env = "POLYTOMIC_WEBHOOK_PREVIOUS_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    previous_secret: Option<String>,

    /// The address to listen on: an IP address and a port (port 0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_ADDR, value_name = "ADDR", value_parser = listen_addr)]
    addr: SocketAddr,

    /// The path deliveries are POSTed to.
    #[arg(long, default_value = WEBHOOK_PATH, value_name = "PATH", value_parser = route_path)]
    path: String,

    /// Append accepted batches to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// How long a batch waits for its line to be written (a reader of --out or standard
    /// output that stopped reading, a slow disk) before it is answered 503
    /// `batch_not_stored`; a line whose write had not started by then is never written.
    /// /readyz answers 503 while the output takes no line.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_OUTPUT_WAIT_MS", value_name = "MS",
          default_value_t = u64::try_from(DEFAULT_WAIT.as_millis()).unwrap_or(u64::MAX))]
    output_wait_ms: u64,

    /// Make each batch durable on disk (fsync) before answering 200; needs --out FILE or a
    /// `sqlite:` sink.
    #[arg(long)]
    fsync: bool,

    /// Store batches in a sink instead of writing lines: `sqlite:PATH` or
    /// `redis://HOST:PORT[/DB][?stream=NAME]`. Each record is stored once per change, and the
    /// answer is 200 `{"accepted":N,"stored":S,"unchanged":U,"superseded":P}`, or 503
    /// `sink_unavailable`.
    #[arg(long, value_name = "URL", conflicts_with = "out")]
    sink: Option<SinkUrl>,

    /// With --sink: identify records by this field's value (else by their hash), so that a
    /// record that changes back to an earlier state is stored again.
    #[arg(long, value_name = "NAME", requires = "sink")]
    key_field: Option<String>,

    /// With a `redis://` sink: forget a record identified by its hash (no --key-field, or
    /// the field missing) SECS seconds after it was stored, so that the state stays bounded;
    /// a redelivery after that is stored again. Records identified by a key never expire.
    #[arg(long, value_name = "SECS", requires = "sink", value_parser = clap::value_parser!(u64).range(1..))]
    redis_ttl: Option<u64>,

    /// Most deliveries handled at once; one beyond it waits --queue-wait-ms for a place,
    /// then is answered 503 `overloaded` with Retry-After.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT,
          value_name = "N", value_parser = at_least_one)]
    max_in_flight: usize,

    /// How long a delivery waits for a place when --max-in-flight are being handled.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_QUEUE_WAIT_MS", value_name = "MS",
          default_value_t = u64::try_from(DEFAULT_QUEUE_WAIT.as_millis()).unwrap_or(u64::MAX))]
    queue_wait_ms: u64,

    /// Most decoded bytes all deliveries (batches and events) hold at once; a delivery that
    /// would pass it is stopped and answered 503 `overloaded` with Retry-After.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_MAX_DECODED_IN_FLIGHT", value_name = "BYTES",
          default_value_t = DEFAULT_MAX_DECODED_IN_FLIGHT)]
    max_decoded_in_flight: u64,

    /// Most refused bodies read and thrown away at once (so that a client still sending hears
    /// its 401); a refusal beyond it is answered at once and its connection closed. A refused
    /// delivery gives its --max-in-flight place back before its body is drained.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_MAX_DRAINING", default_value_t = DEFAULT_MAX_DRAINING,
          value_name = "N", value_parser = at_least_one)]
    max_draining: usize,

    /// The longest one refused body is drained before its refusal is sent.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_DRAIN_MS", value_name = "MS",
          default_value_t = u64::try_from(DEFAULT_DRAIN_TIME.as_millis()).unwrap_or(u64::MAX))]
    drain_ms: u64,

    /// Most connections open at once; past it new connections wait to be accepted. Any
    /// connection with no request in progress for 10 s is closed.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_MAX_CONNECTIONS", default_value_t = MAX_CONNECTIONS,
          value_name = "N", value_parser = at_least_one)]
    max_connections: usize,

    /// Serve GET /metrics (Prometheus text) on this address instead of --addr.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_METRICS_ADDR", value_name = "ADDR",
          value_parser = listen_addr)]
    metrics_addr: Option<SocketAddr>,

    /// The signing secret of the organisation Events webhook: turns on its route,
    /// POST /webhooks/polytomic/events (the receiver example's), where each event whose
    /// Polytomic-Signature matches is written as one JSON line
    /// (`{"event_id":…,"type":…,"organization_id":…,"created_at":…,"payload":{…}}`) with the
    /// batches, once per event id.
    #[arg(
        long,
        env = "POLYTOMIC_EVENTS_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    events_secret: Option<String>,

    /// While rotating: the Events webhook's previous signing secret, accepted as well as
    /// --events-secret.
    #[arg(
        long,
        env = "POLYTOMIC_EVENTS_PREVIOUS_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        requires = "events_secret"
    )]
    previous_events_secret: Option<String>,

    /// With --events-secret: remember handled event ids in this Redis
    /// (`redis://HOST:PORT[/DB]`), shared by every replica, instead of in this process (the
    /// last 100,000).
    #[arg(
        long,
        env = "POLYTOMIC_EVENTS_REDIS_URL",
        hide_env_values = true,
        value_name = "URL",
        requires = "events_secret"
    )]
    events_redis_url: Option<String>,
}

/// Where `serve` listens unless --addr says otherwise; `send-event` posts there by default.
const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// How many handled event ids `serve` remembers without --events-redis-url (the receiver
/// example's figure).
const REMEMBERED_EVENT_IDS: usize = 100_000;

/// An address to listen on, explained as the receiver example explains its variable.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    polytomic_webhook::server::parse_listen_addr(text, DEFAULT_ADDR).map_err(|bad| {
        format!(
            "not an address to listen on: {}. Expected an IP address and a port, such as \
             {DEFAULT_ADDR}. Fix: use {}",
            bad.problem(),
            bad.suggestion()
        )
    })
}

/// The routes `serve` answers besides the webhook's.
const OPS_PATHS: [&str; 3] = ["/healthz", "/metrics", "/readyz"];

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(0) | Err(_) => Err(format!(
            "expected a whole number of at least 1, got `{text}`"
        )),
        Ok(count) => Ok(count),
    }
}

fn route_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        Err(format!("the path must start with `/`, got `{text}`"))
    } else if OPS_PATHS.contains(&text) || text == EVENTS_PATH {
        Err(format!("`{text}` is taken by the server's own route"))
    } else {
        Ok(text.to_owned())
    }
}

/// --secret, and --previous-secret while rotating.
fn secrets(args: &ServeArgs) -> Result<SecretSet, String> {
    let current =
        Secret::new(args.secret.as_str()).map_err(|error| format!("unusable --secret: {error}"))?;
    let set = SecretSet::from(current);
    match &args.previous_secret {
        None => Ok(set),
        Some(previous) => Secret::new(previous.as_str())
            .map(|previous| set.with(previous))
            .map_err(|error| format!("unusable --previous-secret: {error}")),
    }
}

/// --events-secret, and --previous-events-secret while rotating; `None` without them.
fn events_secrets(args: &ServeArgs) -> Result<Option<SigningSecrets>, String> {
    let Some(current) = &args.events_secret else {
        return Ok(None);
    };
    fn unusable(flag: &'static str) -> impl Fn(InvalidSecret) -> String {
        move |error| format!("unusable {flag}: {error}")
    }
    let secrets = SigningSecrets::new(current.as_str()).map_err(unusable("--events-secret"))?;
    match &args.previous_events_secret {
        None => Ok(Some(secrets)),
        Some(previous) => secrets
            .with(previous.as_str())
            .map(Some)
            .map_err(unusable("--previous-events-secret")),
    }
}

struct Receiver {
    /// Empty while a sink is being opened (SQLite reads every identity it holds first):
    /// deliveries and `/readyz` are answered 503 `not_ready` until then.
    destination: OnceLock<Destination>,
    /// The destination's readiness, made once: it keeps the probe's last result, so that the
    /// probe runs at most once a second however many requests ask.
    readiness: OnceLock<Readiness>,
    /// Where events go when batches go to a sink: standard output, through a writer of its
    /// own (with lines, events share the batches' writer).
    events_out: Option<LineWriter>,
    counts: Mutex<Counts>,
}

/// Where accepted batches go.
enum Destination {
    /// One line per batch, written by a thread of its own.
    Lines(LineWriter),
    /// Each record once per change.
    Sink(Arc<dyn Sink>),
}

impl Destination {
    /// What `/readyz` asks: a sink must answer its cheap check; a line output must be open
    /// and taking lines (a write that fails is answered 503 `batch_not_stored` on its own).
    fn readiness(&self) -> Readiness {
        match self {
            Self::Lines(writer) => {
                let writer = writer.clone();
                Readiness::new(move || std::future::ready(writer.is_ready()))
            }
            Self::Sink(sink) => {
                let sink = Arc::clone(sink);
                Readiness::new(move || {
                    let sink = Arc::clone(&sink);
                    async move { sink.ready().await.is_ok() }
                })
            }
        }
    }
}

#[derive(Default)]
struct Counts {
    batches: u64,
    records: u64,
    ignored: u64,
    /// Refusals by "status code".
    refused: BTreeMap<String, u64>,
}

pub(crate) async fn run(args: ServeArgs) -> ExitCode {
    let secrets = match secrets(&args) {
        Ok(secrets) => secrets,
        Err(message) => {
            eprintln!("{NAME}: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // A sink is opened once listening (below); an output file at once, which is quick.
    let opened = match sink_plan(&args) {
        Ok(Some(plan)) => Ok(Ok(plan)),
        Ok(None) => open_output(&args).map(|out| Err(Destination::Lines(out))),
        Err(usage) => Err(usage),
    };
    let (sink, destination) = match opened {
        Ok(Ok(plan)) => (Some(plan), OnceLock::new()),
        Ok(Err(destination)) => (None, OnceLock::from(destination)),
        Err((message, status)) => {
            eprintln!("{NAME}: {message}");
            return ExitCode::from(status);
        }
    };
    let layer = match PolytomicWebhookLayer::new(PolytomicWebhookConfig::default().secrets(secrets))
    {
        Ok(layer) => layer,
        Err(error) => {
            eprintln!("{NAME}: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let events = match events_secrets(&args).and_then(|secrets| {
        secrets
            .map(|secrets| {
                PolytomicOrgEventsLayer::new(PolytomicOrgEventsConfig::default().secrets(secrets))
                    .map_err(|error| error.to_string())
            })
            .transpose()
    }) {
        Ok(events) => events,
        Err(message) => {
            eprintln!("{NAME}: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let event_ids = match &args.events_redis_url {
        Some(url) => match RedisEventIdStore::connect(url).await {
            Ok(store) => Some(store),
            Err(error) => {
                // The error names the address, never the URL (which may hold a password).
                eprintln!("{NAME}: cannot use --events-redis-url: {error}");
                return ExitCode::from(EXIT_FAILED);
            }
        },
        None => None,
    };
    let metrics = match install_prometheus_recorder() {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("{NAME}: cannot set up the metrics: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let events_out = match (&events, destination.get()) {
        (Some(_), None) => match LineOutput::stdout().and_then(|output| {
            LineWriter::spawn(output, Duration::from_millis(args.output_wait_ms))
        }) {
            Ok(writer) => Some(writer),
            Err(error) => {
                eprintln!("{NAME}: cannot write events to standard output: {error}");
                return ExitCode::from(EXIT_FAILED);
            }
        },
        _ => None,
    };
    let receiver = Arc::new(Receiver {
        destination,
        readiness: OnceLock::new(),
        events_out,
        counts: Mutex::new(Counts::default()),
    });
    let listener = match bind(args.addr).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let ops = match args.metrics_addr {
        Some(metrics_addr) => {
            let metrics_listener = match bind(metrics_addr).await {
                Ok(listener) => listener,
                Err(code) => return code,
            };
            let bound = metrics_listener.local_addr().unwrap_or(metrics_addr);
            eprintln!("{NAME}: metrics on http://{bound}/metrics");
            // Ends with the process: the metrics outlive the deliveries being finished.
            tokio::spawn(serve(
                metrics_listener,
                metrics_route(Router::new(), metrics),
                ServeOptions::default(),
                std::future::pending(),
            ));
            Ops::default()
        }
        None => Ops {
            metrics: Some(metrics),
            ..Ops::default()
        },
    };
    let ops = ops.with_limits(
        ServerLimits::default()
            .max_in_flight(args.max_in_flight)
            .queue_wait(Duration::from_millis(args.queue_wait_ms))
            .max_decoded_in_flight(args.max_decoded_in_flight)
            .max_draining(args.max_draining)
            .drain_time(Duration::from_millis(args.drain_ms)),
    );
    let mut app = app(&receiver, &args.path, layer, &ops);
    let bound = listener.local_addr().unwrap_or(args.addr);
    if let Some(events) = events {
        app = app.merge(match event_ids {
            Some(store) => events_route(&receiver, events, &ops, store),
            None => events_route(
                &receiver,
                events,
                &ops,
                MemoryEventIdStore::new(REMEMBERED_EVENT_IDS),
            ),
        });
    }
    // Before saying so: a signal sent on seeing that line must meet the handler.
    let shutdown = shutdown_signal();
    eprintln!("{NAME}: listening on http://{bound}{}", args.path);
    if args.events_secret.is_some() {
        eprintln!("{NAME}: organisation events on http://{bound}{EVENTS_PATH}");
    }
    if let Some(fifo) = args.out.as_deref().filter(|path| is_fifo(path)) {
        eprintln!(
            "{NAME}: {} is a FIFO: waiting for a reader to open it; until one does, deliveries \
             wait and /readyz answers 503",
            fifo.display()
        );
    }
    let failed = Arc::new(AtomicBool::new(false));
    let opening = match (sink, receiver.destination.get()) {
        (Some(plan), _) => {
            eprintln!(
                "{NAME}: opening the sink; deliveries and /readyz are answered 503 until it is open"
            );
            Some(tokio::spawn(open_sink(
                plan,
                Arc::clone(&receiver),
                Arc::clone(&failed),
            )))
        }
        (None, Some(Destination::Lines(writer))) => Some(tokio::spawn(output_opened(
            writer.clone(),
            Arc::clone(&failed),
        ))),
        (None, _) => None,
    };
    // A sink that cannot be opened stops the server as a signal would.
    let shutdown = async move {
        let open_failed = async {
            let opened = match opening {
                Some(task) => task.await.unwrap_or(true),
                None => true,
            };
            if opened {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = open_failed => {}
        }
    };
    let started = Instant::now();
    let options = ServeOptions::default().max_connections(args.max_connections);
    serve(listener, app, options, shutdown).await;
    if failed.load(Ordering::SeqCst) {
        return ExitCode::from(EXIT_FAILED);
    }
    eprint!("{}", receiver.summary(started));
    ExitCode::SUCCESS
}

/// What --sink names, checked but not opened yet.
struct SinkPlan {
    url: SinkUrl,
    identity: Identity,
    durability: Durability,
    redis_ttl: Option<Duration>,
}

/// Opens the sink and hands it to `receiver`; `false` (with `failed` set) when it cannot be
/// opened. SQLite does its reading on a thread of its own, so the runtime's workers go on
/// answering meanwhile.
async fn open_sink(plan: SinkPlan, receiver: Arc<Receiver>, failed: Arc<AtomicBool>) -> bool {
    let opened = plan
        .url
        .open_with_ttl(plan.identity, plan.durability, plan.redis_ttl)
        .await;
    match opened {
        Ok(sink) => {
            let _ = receiver.destination.set(Destination::Sink(sink));
            eprintln!("{NAME}: the sink is open");
            true
        }
        Err(error) => {
            eprintln!("{NAME}: cannot open the sink: {error}");
            failed.store(true, Ordering::SeqCst);
            false
        }
    }
}

/// Waits until the writer's output is open (a FIFO opens once it has a reader); `false` (with
/// `failed` set) when it cannot be opened.
async fn output_opened(writer: LineWriter, failed: Arc<AtomicBool>) -> bool {
    match writer.opened().await {
        Ok(()) => true,
        Err(error) => {
            eprintln!("{NAME}: cannot open the output: {error}");
            failed.store(true, Ordering::SeqCst);
            false
        }
    }
}

/// The answer to deliveries and `/readyz` while the sink is being opened.
fn loading() -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        NOT_READY,
        "The receiver is still opening its sink (reading the identities it holds); it takes \
         deliveries once that is done.",
    )
    .into_response()
}

/// What --sink asks for (`None` without it), or the usage error of arguments that do not fit.
fn sink_plan(args: &ServeArgs) -> Result<Option<SinkPlan>, (String, u8)> {
    let Some(url) = &args.sink else {
        return Ok(None);
    };
    if args.fsync && !matches!(url, SinkUrl::Sqlite(_)) {
        return Err((
            "--fsync applies to --out FILE and sqlite: sinks (Redis's durability is its own \
             appendfsync setting)"
                .to_owned(),
            EXIT_USAGE,
        ));
    }
    if args.redis_ttl.is_some() && !matches!(url, SinkUrl::Redis { .. }) {
        return Err((
            "--redis-ttl applies to redis:// sinks".to_owned(),
            EXIT_USAGE,
        ));
    }
    let identity = args
        .key_field
        .as_deref()
        .map_or_else(Identity::hash, Identity::key_field);
    let durability = if args.fsync {
        Durability::PowerLoss
    } else {
        Durability::Process
    };
    Ok(Some(SinkPlan {
        url: url.clone(),
        identity,
        durability,
        redis_ttl: args.redis_ttl.map(Duration::from_secs),
    }))
}

/// A listener on `addr`, or the exit status after saying why there is none.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ExitCode> {
    polytomic_webhook::server::bind(addr).map_err(|error| {
        eprintln!("{NAME}: cannot listen on {addr}: {error}");
        ExitCode::from(EXIT_FAILED)
    })
}

/// The writer of the output --out names (standard output when absent or `-`), or the message
/// and exit status for one that cannot be used. A regular file left with a partial last line
/// (a process killed while writing it) is cut back to its last whole line first. A FIFO is
/// opened by the writer thread, so that `serve` listens while it waits for a reader.
fn open_output(args: &ServeArgs) -> Result<LineWriter, (String, u8)> {
    let wait = Duration::from_millis(args.output_wait_ms);
    let spawn = |output: LineOutput| {
        LineWriter::spawn(output, wait).map_err(|error| {
            (
                format!("cannot start the output's writer: {error}"),
                EXIT_FAILED,
            )
        })
    };
    let Some(path) = args.out.as_ref().filter(|path| path.as_os_str() != "-") else {
        if args.fsync {
            return Err(("--fsync needs --out FILE".to_owned(), EXIT_USAGE));
        }
        return LineOutput::stdout()
            .map(warn_repaired("standard output"))
            .map_err(|error| (format!("cannot use standard output: {error}"), EXIT_FAILED))
            .and_then(spawn);
    };
    let cannot = |error: io::Error| {
        (
            format!("cannot open {}: {error}", path.display()),
            EXIT_FAILED,
        )
    };
    let not_a_file = |path: &std::path::Path| {
        (
            format!(
                "--fsync needs a regular file, and {} is not one",
                path.display()
            ),
            EXIT_USAGE,
        )
    };
    if is_fifo(path) {
        if args.fsync {
            return Err(not_a_file(path));
        }
        let fifo = path.clone();
        // Write-only, so that the open waits for a reader and a reader that goes away is a
        // failed write (503), not lines piling up unread.
        return LineWriter::opening(
            move || LineOutput::pipe(OpenOptions::new().append(true).open(fifo)?),
            wait,
        )
        .map_err(cannot);
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(cannot)?;
    let is_file = file.metadata().map_err(cannot)?.is_file();
    if !is_file {
        if args.fsync {
            return Err(not_a_file(path));
        }
        return LineOutput::pipe(file).map_err(cannot).and_then(spawn);
    }
    let mut reader = file.try_clone().map_err(cannot)?;
    LineOutput::file(file, &mut reader, args.fsync)
        .map(warn_repaired(&path.display().to_string()))
        .map_err(cannot)
        .and_then(spawn)
}

/// Whether `path` names a FIFO (opening one for writing waits for a reader).
fn is_fifo(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(path).is_ok_and(|meta| meta.file_type().is_fifo())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Passes `output` on, saying on stderr what was cut from its end.
fn warn_repaired(name: &str) -> impl FnOnce(LineOutput) -> LineOutput + '_ {
    move |output| {
        if output.repaired() > 0 {
            eprintln!(
                "{NAME}: warning: {name} ended in a partial line (a process stopped while \
                 writing it, so it was never acknowledged); cut off its last {}",
                plural(output.repaired(), "byte", "bytes")
            );
        }
        output
    }
}

/// What `serve` answers besides deliveries.
struct Ops {
    /// `GET /metrics` on the webhook's port, unless --metrics-addr moved it.
    metrics: Option<PrometheusHandle>,
    /// The server-wide bounds on the webhook route.
    limits: ServerLimits,
    /// The decoded-bytes budget of `limits`, drawn from by batches and events alike.
    decoded_budget: DecodedBudgetLayer,
}

impl Default for Ops {
    fn default() -> Self {
        Self {
            metrics: None,
            limits: ServerLimits::default(),
            decoded_budget: DecodedBudgetLayer::new(&ServerLimits::default()),
        }
    }
}

impl Ops {
    /// These `Ops` with `limits`, and one decoded-bytes budget of their size for both routes.
    fn with_limits(self, limits: ServerLimits) -> Self {
        Self {
            decoded_budget: DecodedBudgetLayer::new(&limits),
            limits,
            ..self
        }
    }
}

/// The webhook route behind `layer`, answering from `receiver`; `GET /readyz`, and
/// `GET /metrics` when `ops` has it, outside the layer.
fn app(receiver: &Arc<Receiver>, path: &str, layer: PolytomicWebhookLayer, ops: &Ops) -> Router {
    let counted = Arc::clone(receiver);
    let ready = Arc::clone(receiver);
    let router = Router::new()
        .route(path, post(receive))
        .route_layer(CatchPanicLayer::custom(handler_panicked))
        // Inside the webhook layer, where the body is the decoded one.
        .route_layer(ops.decoded_budget.clone())
        .with_state(Arc::clone(receiver))
        .layer(layer)
        // Outside the webhook layer, so a delivery waiting for a place has cost nothing yet.
        .route_layer(InFlightLimitLayer::new(&ops.limits))
        // Outermost, so it sees the layer's own refusals as well as the handler's answers.
        .layer(MapResponseLayer::new(move |response: Response| {
            counted.count_refusal(&response);
            response
        }))
        // Added after the layers, which wrap only the routes before them.
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let receiver = Arc::clone(&ready);
                async move { receiver.readyz().await }
            }),
        );
    match &ops.metrics {
        Some(handle) => metrics_route(router, handle.clone()),
        None => router,
    }
}

/// The Events route as the receiver example wires it: the Events layer checks the signature,
/// then the in-flight bound (so only a signed event takes a place), then each event id once.
fn events_route<St: EventIdStore>(
    receiver: &Arc<Receiver>,
    layer: PolytomicOrgEventsLayer,
    ops: &Ops,
    store: St,
) -> Router {
    let in_flight = InFlightLimitLayer::new(&ops.limits);
    let layer = layer.decoded_budget(&ops.decoded_budget);
    Router::new()
        .route(EVENTS_PATH, post(receive_event))
        .route_layer(CatchPanicLayer::custom(handler_panicked))
        .route_layer(DedupLayer::new(store))
        .route_layer(in_flight.clone())
        .route_layer(layer)
        // The Events layer's refusals from the head drain within the route's drain budget.
        .route_layer(axum::Extension(in_flight.drain_budget()))
        .with_state(Arc::clone(receiver))
}

/// Writes the event as one line where the batches go (standard output with a sink), then
/// acknowledges it; one that cannot be written is answered 503 `event_not_stored`, so
/// Polytomic sends it again.
async fn receive_event(
    State(receiver): State<Arc<Receiver>>,
    event: PolytomicOrgEvent,
) -> Response {
    let line = match event_line(&event) {
        Ok(line) => line,
        Err(error) => return event_not_stored(&error),
    };
    let ((Some(out), _) | (None, Some(Destination::Lines(out)))) =
        (&receiver.events_out, receiver.destination.get())
    else {
        return event_not_stored(&"standard output is not open");
    };
    let written = out.append(line).await;
    match written {
        Ok(()) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"accepted":true}"#,
        )
            .into_response(),
        Err(error) => event_not_stored(&error),
    }
}

/// 503 `event_not_stored`, so Polytomic sends the event again.
fn event_not_stored(error: &dyn std::fmt::Display) -> Response {
    eprintln!("{NAME}: cannot write an event: {error}");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "event_not_stored",
        "The receiver could not write this event; send it again later.",
    )
    .into_response()
}

/// `router` with `GET /metrics` rendering `handle`.
fn metrics_route(router: Router, handle: PrometheusHandle) -> Router {
    router.route(
        "/metrics",
        get(move || async move { prometheus_answer(&handle) }),
    )
}

/// Keeps the batch before answering, so a 200 means it is in the output or the sink.
async fn receive(State(receiver): State<Arc<Receiver>>, batch: SyncRecords) -> Response {
    let Some(destination) = receiver.destination.get() else {
        return loading();
    };
    let mut response = match destination {
        Destination::Lines(writer) => match batch_line(&batch) {
            Ok(line) => match writer.append(line).await {
                Ok(()) => Ack::from(&batch).into_response(),
                Err(error) => {
                    eprintln!("{NAME}: cannot write a batch: {error}");
                    return error.into_response();
                }
            },
            Err(error) => {
                eprintln!("{NAME}: cannot write a batch: {error}");
                return NotStored.into_response();
            }
        },
        Destination::Sink(sink) => match store(&**sink, &batch).await {
            Ok(ack) => ack.into_response(),
            Err(unavailable) => {
                eprintln!("{NAME}: cannot store a batch: {}", unavailable.error());
                return unavailable.into_response();
            }
        },
    };
    let mut counts = receiver
        .counts
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    counts.batches += 1;
    counts.records += batch.len() as u64;
    response.extensions_mut().insert(Handled);
    response
}

impl Receiver {
    /// `GET /readyz`: 503 while the sink is being opened, then what the destination answers.
    async fn readyz(&self) -> Response {
        match self.destination.get() {
            None => loading(),
            Some(destination) => {
                self.readiness
                    .get_or_init(|| destination.readiness())
                    .answer()
                    .await
            }
        }
    }

    fn count_refusal(&self, response: &Response) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if response.status().is_success() {
            // Accepted batches are counted by the handler; a 2xx it did not write is an event
            // the layer acknowledged without it.
            if response.extensions().get::<Handled>().is_none() {
                counts.ignored += 1;
            }
            return;
        }
        let code = response
            .extensions()
            .get::<ProblemCode>()
            .map_or("-", ProblemCode::as_str);
        *counts
            .refused
            .entry(format!("{} {code}", response.status().as_u16()))
            .or_default() += 1;
    }

    fn summary(&self, started: Instant) -> String {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = format!(
            "{NAME}: accepted {} in {:.1}s; ignored {}; refused {}",
            batches(counts.batches, counts.records),
            started.elapsed().as_secs_f64(),
            plural(counts.ignored, "unknown event", "unknown events"),
            plural(
                counts.refused.values().sum::<u64>(),
                "delivery",
                "deliveries"
            ),
        );
        for (reason, count) in &counts.refused {
            let _ = write!(text, "\n  refused {count}: {reason}");
        }
        text.push('\n');
        text
    }
}

/// Marks a response the handler produced, to tell it from the layer's acknowledgements.
#[derive(Clone, Copy)]
struct Handled;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use polytomic_webhook::testing::Delivery;
    use serde_json::json;
    use tower::ServiceExt as _;

    use std::io::Write;

    use polytomic_webhook_store::lines::AppendFile;

    use super::*;

    const SECRET: &str = "serve-test-secret";

    /// A file on a disk with room for `capacity` bytes: a write past it stores what fits and
    /// then fails, as a full disk does.
    #[derive(Clone)]
    struct Disk(Arc<Mutex<DiskState>>);

    struct DiskState {
        data: Vec<u8>,
        capacity: usize,
        writes: usize,
        /// The length of `data` at each successful `sync_data`.
        synced: Vec<usize>,
        sync_fails: bool,
        set_len_fails: bool,
    }

    impl Disk {
        fn new() -> Self {
            Self(Arc::new(Mutex::new(DiskState {
                data: Vec::new(),
                capacity: usize::MAX,
                writes: 0,
                synced: Vec::new(),
                sync_fails: false,
                set_len_fails: false,
            })))
        }

        fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
            self.0.lock().unwrap()
        }
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut disk = self.state();
            disk.writes += 1;
            let room = disk.capacity - disk.data.len();
            if room == 0 {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            let len = buf.len().min(room);
            disk.data.extend_from_slice(&buf[..len]);
            Ok(len)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl AppendFile for Disk {
        fn size(&self) -> io::Result<u64> {
            Ok(self.state().data.len() as u64)
        }

        fn set_len(&mut self, len: u64) -> io::Result<()> {
            let mut disk = self.state();
            if disk.set_len_fails {
                return Err(io::Error::other("read-only now"));
            }
            disk.data.truncate(usize::try_from(len).unwrap());
            Ok(())
        }

        fn sync_data(&self) -> io::Result<()> {
            let mut disk = self.state();
            if disk.sync_fails {
                return Err(io::Error::other("the disk went away"));
            }
            let len = disk.data.len();
            disk.synced.push(len);
            Ok(())
        }
    }

    fn receiver_on(disk: &Disk, fsync: bool) -> Router {
        let receiver = Arc::new(Receiver {
            destination: OnceLock::from(Destination::Lines(
                LineWriter::spawn(
                    LineOutput::append_file(Box::new(disk.clone()), fsync),
                    DEFAULT_WAIT,
                )
                .unwrap(),
            )),
            readiness: OnceLock::new(),
            events_out: None,
            counts: Mutex::new(Counts::default()),
        });
        let config = PolytomicWebhookConfig::default().secret(Secret::new(SECRET).unwrap());
        app(
            &receiver,
            WEBHOOK_PATH,
            PolytomicWebhookLayer::new(config).unwrap(),
            &Ops::default(),
        )
    }

    /// Posts a one-record batch; the answer's status and problem code.
    async fn post_batch(app: &Router, marker: &str) -> (StatusCode, Option<&'static str>) {
        let request = Delivery::new()
            .uri(WEBHOOK_PATH)
            .secret(SECRET)
            .record_json(json!({"marker": marker}))
            .build();
        let response = app.clone().oneshot(request).await.unwrap();
        let code = response
            .extensions()
            .get::<ProblemCode>()
            .map(ProblemCode::as_str);
        (response.status(), code)
    }

    fn markers(data: &[u8]) -> Vec<String> {
        std::str::from_utf8(data)
            .unwrap()
            .lines()
            .map(|line| {
                let batch: serde_json::Value = serde_json::from_str(line).unwrap();
                batch["records"][0]["fields"]["marker"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_that_does_not_fit_gets_503_and_is_cut_off_so_the_file_stays_json_lines() {
        let disk = Disk::new();
        let app = receiver_on(&disk, false);
        assert_eq!(post_batch(&app, "first").await, (StatusCode::OK, None));
        let (line_len, writes) = {
            let state = disk.state();
            (state.data.len(), state.writes)
        };
        // The line and its newline in one write: no crash can leave a line without its end.
        assert_eq!(writes, 1);
        assert_eq!(disk.state().data.last(), Some(&b'\n'));

        // Room for half of the next line: part of it is written, then the disk is full.
        disk.state().capacity = line_len + line_len / 2;
        assert_eq!(
            post_batch(&app, "too-big").await,
            (StatusCode::SERVICE_UNAVAILABLE, Some("batch_not_stored"))
        );
        assert_eq!(
            disk.state().data.len(),
            line_len,
            "the partial line was left"
        );

        disk.state().capacity = usize::MAX;
        assert_eq!(post_batch(&app, "third").await, (StatusCode::OK, None));
        assert_eq!(markers(&disk.state().data), ["first", "third"]);
    }

    #[tokio::test]
    async fn fsync_makes_the_line_durable_before_the_200_and_a_failed_sync_is_503() {
        let disk = Disk::new();
        assert_eq!(
            post_batch(&receiver_on(&disk, false), "unsynced").await.0,
            StatusCode::OK
        );
        assert!(disk.state().synced.is_empty());

        let app = receiver_on(&disk, true);
        assert_eq!(post_batch(&app, "synced").await.0, StatusCode::OK);
        let len = disk.state().data.len();
        assert_eq!(disk.state().synced, [len]);

        disk.state().sync_fails = true;
        assert_eq!(
            post_batch(&app, "lost").await,
            (StatusCode::SERVICE_UNAVAILABLE, Some("batch_not_stored"))
        );
        assert_eq!(markers(&disk.state().data), ["unsynced", "synced"]);
    }

    #[tokio::test]
    async fn a_partial_line_that_cannot_be_cut_off_stops_every_later_write() {
        let disk = Disk::new();
        let app = receiver_on(&disk, false);
        {
            let mut state = disk.state();
            state.capacity = 10;
            state.set_len_fails = true;
        }
        assert_eq!(
            post_batch(&app, "partial").await.1,
            Some("batch_not_stored")
        );
        disk.state().capacity = usize::MAX;
        // Room again, but a line written now would be glued onto the partial one.
        assert_eq!(
            post_batch(&app, "glued?").await,
            (StatusCode::SERVICE_UNAVAILABLE, Some("batch_not_stored"))
        );
        assert_eq!(disk.state().data.len(), 10);
    }

    /// A sink that counts its readiness checks.
    #[derive(Default)]
    struct CountedSink {
        inner: polytomic_webhook_store::MemorySink,
        checks: std::sync::atomic::AtomicUsize,
    }

    impl Sink for CountedSink {
        fn store<'a>(
            &'a self,
            batch: &'a SyncRecords,
        ) -> polytomic_webhook_store::SinkFuture<'a, polytomic_webhook_store::Stored> {
            self.inner.store(batch)
        }

        fn ready(&self) -> polytomic_webhook_store::SinkFuture<'_, ()> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            self.inner.ready()
        }

        fn records(
            &self,
        ) -> polytomic_webhook_store::SinkFuture<'_, Vec<polytomic_webhook_store::StoredRecord>>
        {
            self.inner.records()
        }
    }

    #[tokio::test]
    async fn a_flood_of_readyz_checks_the_sink_once() {
        let sink = Arc::new(CountedSink::default());
        let receiver = Arc::new(Receiver {
            destination: OnceLock::from(Destination::Sink(Arc::clone(&sink) as Arc<dyn Sink>)),
            readiness: OnceLock::new(),
            events_out: None,
            counts: Mutex::new(Counts::default()),
        });
        let config = PolytomicWebhookConfig::default().secret(Secret::new(SECRET).unwrap());
        let app = app(
            &receiver,
            WEBHOOK_PATH,
            PolytomicWebhookLayer::new(config).unwrap(),
            &Ops::default(),
        );
        for _ in 0..100 {
            let request = axum::http::Request::get("/readyz")
                .body(axum::body::Body::empty())
                .unwrap();
            let answer = app.clone().oneshot(request).await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
        }
        assert_eq!(sink.checks.load(Ordering::SeqCst), 1);
    }
}
