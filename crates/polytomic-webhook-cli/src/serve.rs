//! `serve`: the library's receiver with its defaults, writing each accepted batch as a line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Args;
use polytomic_webhook::prelude::*;
use polytomic_webhook::problem::{Problem, ProblemCode};
use tower::util::MapResponseLayer;

use crate::{EXIT_FAILED, EXIT_USAGE, NAME, batches, plural};

#[derive(Args)]
#[command(
    about = "Receive Polytomic deliveries and write each accepted batch as one JSON line",
    long_about = "Receive Polytomic deliveries and write each accepted batch as one JSON line.\n\n\
        A ready receiver on the library's defaults: the bearer secret and a five-minute \
        timestamp window are checked before the body is read, gzip bodies are decoded within \
        limits, and each valid `sync.records` batch is appended to --out as one line \
        (`{\"id\":…,\"name\":…,\"records\":[{\"hash\":…,\"fields\":{…}}],\"metadata\":{…}}`) \
        before it is acknowledged with 200. Refusals are problem+json answers. Prints \
        `listening on http://ADDR` to standard error once bound, and a summary on Ctrl-C \
        (or SIGTERM).",
    after_help = "Examples:\n  \
        polytomic-webhook serve --secret s3cret\n  \
        polytomic-webhook serve --secret s3cret --addr 0.0.0.0:8080 --path /webhooks/polytomic \\\n      \
        --out batches.jsonl\n\n\
        Exit status: 0 after Ctrl-C; 1 when the address cannot be bound or the output fails; \
        2 bad arguments."
)]
pub(crate) struct ServeArgs {
    /// The secret of the webhook connection; deliveries must present it as a bearer token.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,

    /// The address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    addr: SocketAddr,

    /// The path deliveries are POSTed to.
    #[arg(long, default_value = "/", value_name = "PATH", value_parser = route_path)]
    path: String,

    /// Append accepted batches to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn route_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text.to_owned())
    } else {
        Err(format!("the path must start with `/`, got `{text}`"))
    }
}

struct Receiver {
    out: Mutex<Box<dyn Write + Send>>,
    counts: Mutex<Counts>,
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
    let secret = match Secret::new(args.secret.as_str()) {
        Ok(secret) => secret,
        Err(error) => {
            eprintln!("{NAME}: unusable --secret: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let out: Box<dyn Write + Send> = match &args.out {
        Some(path) if path.as_os_str() != "-" => {
            match OpenOptions::new().create(true).append(true).open(path) {
                Ok(file) => Box::new(file),
                Err(error) => {
                    eprintln!("{NAME}: cannot open {}: {error}", path.display());
                    return ExitCode::from(EXIT_FAILED);
                }
            }
        }
        _ => Box::new(io::stdout()),
    };
    let layer = match PolytomicWebhookLayer::new(PolytomicWebhookConfig::default().secret(secret)) {
        Ok(layer) => layer,
        Err(error) => {
            eprintln!("{NAME}: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let receiver = Arc::new(Receiver {
        out: Mutex::new(out),
        counts: Mutex::new(Counts::default()),
    });
    let counted = Arc::clone(&receiver);
    let app = Router::new()
        .route(&args.path, post(receive))
        .with_state(Arc::clone(&receiver))
        .layer(layer)
        // Outermost, so it sees the layer's own refusals as well as the handler's answers.
        .layer(MapResponseLayer::new(move |response: Response| {
            counted.count_refusal(&response);
            response
        }));

    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("{NAME}: cannot listen on {}: {error}", args.addr);
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let bound = listener.local_addr().unwrap_or(args.addr);
    eprintln!("{NAME}: listening on http://{bound}{}", args.path);
    let started = Instant::now();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    eprint!("{}", receiver.summary(started));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{NAME}: the server failed: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Writes the batch before answering, so a 200 means it is in the output.
async fn receive(State(receiver): State<Arc<Receiver>>, batch: SyncRecords) -> Response {
    let line = match serde_json::to_string(&batch) {
        Ok(line) => line,
        Err(error) => return output_failed(&error),
    };
    // A short blocking write under a lock: batches are small, and holding the lock keeps lines
    // whole when deliveries arrive concurrently.
    let written = {
        let mut out = receiver.out.lock().unwrap_or_else(PoisonError::into_inner);
        writeln!(out, "{line}").and_then(|()| out.flush())
    };
    if let Err(error) = written {
        return output_failed(&error);
    }
    let mut counts = receiver
        .counts
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    counts.batches += 1;
    counts.records += batch.len() as u64;
    let mut response = Ack::from(&batch).into_response();
    response.extensions_mut().insert(Handled);
    response
}

fn output_failed(error: &dyn std::error::Error) -> Response {
    eprintln!("{NAME}: cannot write a batch: {error}");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "output_failed",
        "the receiver could not store the batch",
    )
    .into_response()
}

impl Receiver {
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

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
