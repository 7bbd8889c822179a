//! `polytomic-webhook`: send records to a webhook the way Polytomic does, receive them into a
//! file, or print a sample delivery.
//!
//! ```text
//! polytomic-webhook serve --secret s3cret --out batches.jsonl
//! polytomic-webhook send --url http://127.0.0.1:8080/webhooks/polytomic --secret s3cret contacts.csv
//! polytomic-webhook sample
//! polytomic-webhook serve --secret s3cret --sink sqlite:records.db --key-field id
//! polytomic-webhook dump --sink sqlite:records.db
//! polytomic-webhook send-event --type sync.completed --total-records 120 --secret whsec
//! ```
//!
//! Exit status: 0 when everything was accepted, 1 when a batch was refused or could not be
//! delivered (or `serve` failed), 2 for bad arguments or bad input.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod dump;
mod input;
mod sample;
mod send;
mod send_event;
mod serve;

/// Exit status for bad arguments or unusable input (the same as clap's usage errors).
const EXIT_USAGE: u8 = 2;
/// Exit status when a batch was refused, could not be delivered, or the receiver failed.
const EXIT_FAILED: u8 = 1;

/// What the program prints after its own name in every message.
const NAME: &str = "polytomic-webhook";

/// Where `serve` listens and `sample` posts unless told otherwise: the path the receiver example
/// and the README use too.
const WEBHOOK_PATH: &str = "/webhooks/polytomic";

/// Where `serve --events-secret` receives the organisation Events webhook and `send-event`
/// posts unless told otherwise: the receiver example's path.
const EVENTS_PATH: &str = "/webhooks/polytomic/events";

/// The `User-Agent` of every delivery the tool sends or shows.
const USER_AGENT: &str = concat!("polytomic-webhook-cli/", env!("CARGO_PKG_VERSION"));

/// "1 batch", "2 batches": `count` with the word that fits it.
fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// "1 batch (100 records)".
fn batches(batches: u64, records: u64) -> String {
    format!(
        "{} ({})",
        plural(batches, "batch", "batches"),
        plural(records, "record", "records")
    )
}

#[derive(Parser)]
#[command(
    name = NAME,
    version,
    about = "Send records to a webhook as Polytomic does, or receive Polytomic deliveries",
    long_about = "Send records to a webhook as Polytomic does, or receive Polytomic deliveries.\n\n\
        `send` batches JSON Lines or CSV records into gzipped `sync.records` deliveries with a \
        bearer secret and a fresh timestamp; `serve` is a ready receiver that writes each \
        accepted batch as one JSON line, or stores each record once per change with --sink; \
        `dump` prints what a sink holds; `sample` prints a delivery and a curl command; \
        `send-event` sends one signed organisation event (or prints its curl command).",
    after_help = "Examples:\n  \
        polytomic-webhook serve --secret s3cret --out batches.jsonl\n  \
        polytomic-webhook send --url http://127.0.0.1:8080/webhooks/polytomic --secret s3cret contacts.csv\n  \
        polytomic-webhook sample --url https://example.com/webhooks/polytomic\n  \
        polytomic-webhook serve --secret s3cret --sink sqlite:records.db --key-field id\n  \
        polytomic-webhook dump --sink sqlite:records.db\n  \
        polytomic-webhook send-event --type sync.completed --total-records 120 --secret whsec\n\n\
        Exit status: 0 all accepted; 1 a batch was refused or not delivered; 2 bad arguments or input."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Send(send::SendArgs),
    Serve(serve::ServeArgs),
    Sample(sample::SampleArgs),
    SendEvent(send_event::SendEventArgs),
    Dump(dump::DumpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a TLS crypto provider of its own (see the workspace manifest);
    // an error here only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{NAME}: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Send(args) => send::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Sample(args) => sample::run(&args),
            Command::SendEvent(args) => send_event::run(args).await,
            Command::Dump(args) => dump::run(args).await,
        }
    })
}
