//! `send-event`: one signed organisation event, sent or shown as a curl command.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use polytomic_webhook::auth::SignatureEncoding;
use polytomic_webhook::prelude::{RawFields, RawJson};
use polytomic_webhook::testing::{EventDelivery, SAMPLE_ORGANIZATION_ID, SignedBytes};
use reqwest::Url;
use serde_json::value::RawValue;

use crate::sample::quote;
use crate::send::{client, not_delivered, refusal, webhook_url};
use crate::{EXIT_FAILED, EXIT_USAGE, NAME, USER_AGENT};

#[derive(Args)]
#[command(
    about = "Send one signed organisation event, as Polytomic's Events webhook does",
    long_about = "Send one signed organisation event, as Polytomic's Events webhook does.\n\n\
        Builds the envelope (`id`, `organization_id`, `type`, `created_at`, and the payload \
        under `event`), signs the body with HMAC-SHA256 under SECRET in the \
        `Polytomic-Signature` header, and POSTs it. The payload is the JSON object in \
        --payload-file, sent as written (every number exactly; an object that gives a name \
        twice is refused), with --total-records, --inserted-records and --updated-records \
        added to it. With --curl nothing is sent: the command prints a curl command that sends the \
        same event.",
    after_help = "Examples:\n  \
        polytomic-webhook send-event --type sync.completed --total-records 120 --secret whsec\n  \
        polytomic-webhook send-event --type bulk_sync.failed --payload-file payload.json \\\n      \
        --url https://example.com/webhooks/polytomic/events --secret whsec --gzip\n  \
        polytomic-webhook send-event --type sync.running --secret whsec --curl\n\n\
        Exit status: 0 the event was accepted (2xx); 1 it was refused or not delivered; 2 bad \
        arguments or payload (nothing sent)."
)]
pub(crate) struct SendEventArgs {
    /// The event type, such as sync.completed or bulk_sync.failed.
    #[arg(long = "type", value_name = "TYPE")]
    kind: String,

    /// Where to POST the event (http or https).
    #[arg(
        long,
        value_name = "URL",
        value_parser = webhook_url,
        default_value = "http://127.0.0.1:8080/webhooks/polytomic/events"
    )]
    url: Url,

    /// The Events webhook's signing secret.
    #[arg(long, env = "POLYTOMIC_EVENTS_SECRET", hide_env_values = true)]
    secret: String,

    /// A JSON object to send as the payload.
    #[arg(long, value_name = "FILE")]
    payload_file: Option<PathBuf>,

    /// `total_records` in the payload.
    #[arg(long, value_name = "N")]
    total_records: Option<u64>,

    /// `inserted_records` in the payload.
    #[arg(long, value_name = "N")]
    inserted_records: Option<u64>,

    /// `updated_records` in the payload.
    #[arg(long, value_name = "N")]
    updated_records: Option<u64>,

    /// The event id; a new one by default. Send the same id twice to see a duplicate answered.
    #[arg(long, value_name = "ID")]
    id: Option<String>,

    /// The organisation id.
    #[arg(long, value_name = "ID", default_value = SAMPLE_ORGANIZATION_ID)]
    organization_id: String,

    /// How the signature is written.
    #[arg(long, value_enum, default_value_t = Encoding::Hex)]
    encoding: Encoding,

    /// Gzip the body (`Content-Encoding: gzip`).
    #[arg(long)]
    gzip: bool,

    /// Print a curl command that sends the event instead of sending it.
    #[arg(long)]
    curl: bool,

    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Encoding {
    Hex,
    HexUpper,
    Base64,
    Base64Url,
}

impl From<Encoding> for SignatureEncoding {
    fn from(encoding: Encoding) -> Self {
        match encoding {
            Encoding::Hex => Self::Hex,
            Encoding::HexUpper => Self::HexUpper,
            Encoding::Base64 => Self::Base64,
            Encoding::Base64Url => Self::Base64Url,
        }
    }
}

pub(crate) async fn run(args: SendEventArgs) -> ExitCode {
    let payload = match payload(&args) {
        Ok(payload) => payload,
        Err(message) => {
            eprintln!("{NAME}: {message}; nothing was sent");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let id = args.id.clone().unwrap_or_else(new_id);
    let delivery = EventDelivery::new(args.kind.as_str())
        .id(id.as_str())
        .organization_id(args.organization_id.as_str())
        .payload_raw(payload)
        .encoding(args.encoding.into())
        .secret(args.secret.as_str())
        .gzip(args.gzip);
    if args.curl {
        return match write_curl(&args, delivery, &mut io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{NAME}: cannot write the command: {error}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let client = match client(args.timeout) {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let (headers, body) = delivery.encode();
    let response = client
        .post(args.url.clone())
        .headers(headers)
        .header(reqwest::header::USER_AGENT, USER_AGENT)
        .body(body)
        .send()
        .await;
    let what = format!("{} event {id}", args.kind);
    match response {
        Ok(response) if response.status().is_success() => {
            let status = response.status();
            let duplicate = response
                .bytes()
                .await
                .is_ok_and(|body| body.as_ref() == br#"{"duplicate":true}"#);
            let note = if duplicate { " (a duplicate)" } else { "" };
            eprintln!("{NAME}: {what} accepted{note}: HTTP {status}");
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("{NAME}: {what} refused: {}", refusal(response).await);
            ExitCode::from(EXIT_FAILED)
        }
        Err(error) => {
            eprintln!(
                "{NAME}: {what} not delivered: {}",
                not_delivered(&error, &args.url)
            );
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The payload object as its text: the file's as written (every number exactly), with the
/// count flags added. A name given twice in the file is refused, as a receiver refuses it.
fn payload(args: &SendEventArgs) -> Result<RawJson, String> {
    let text = match &args.payload_file {
        Some(path) => {
            let name = path.display();
            let bytes =
                std::fs::read(path).map_err(|error| format!("cannot read {name}: {error}"))?;
            let text = String::from_utf8(bytes).map_err(|_| format!("{name} is not UTF-8"))?;
            let raw: &RawValue = serde_json::from_str(&text)
                .map_err(|error| format!("{name} is not JSON: {error}"))?;
            if !raw.get().starts_with('{') {
                return Err(format!("{name} is not a JSON object"));
            }
            let fields: RawFields = raw
                .get()
                .parse()
                .map_err(|error| format!("{name}: {error}"))?;
            fields.as_str().to_owned()
        }
        None => "{}".to_owned(),
    };
    let counts: Vec<_> = [
        ("total_records", args.total_records),
        ("inserted_records", args.inserted_records),
        ("updated_records", args.updated_records),
    ]
    .into_iter()
    .filter_map(|(name, count)| Some((name, count?)))
    .collect();
    let unusable = |error: serde_json::Error| format!("cannot add the counts: {error}");
    if counts.is_empty() {
        return text.parse().map_err(unusable);
    }
    // Members as their text, so that adding the counts changes no number; in name order, as
    // before.
    let mut members: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(&text).map_err(unusable)?;
    for (name, count) in counts {
        members.insert(
            name.to_owned(),
            RawValue::from_string(count.to_string()).map_err(unusable)?,
        );
    }
    serde_json::to_string(&members)
        .and_then(|text| text.parse())
        .map_err(unusable)
}

/// A fresh id: the time in nanoseconds is unique enough for trying a receiver by hand.
fn new_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("evt-{nanos:x}")
}

/// A curl command that sends the event. The body is passed as plain JSON text, which `printf`
/// reproduces byte for byte, so a signature over it stays valid; with --gzip the signature
/// covers the JSON before compression, since `gzip` is free to produce other bytes each time.
fn write_curl(
    args: &SendEventArgs,
    delivery: EventDelivery,
    out: &mut impl Write,
) -> io::Result<()> {
    let delivery = delivery.signed_bytes(SignedBytes::Decoded);
    let json = delivery.json();
    let (headers, _) = delivery.encode();
    let json = String::from_utf8_lossy(&json);
    let gzip = if args.gzip { " | gzip" } else { "" };
    writeln!(
        out,
        "printf '%s' {}{gzip} | curl -sS --fail-with-body -X POST {} \\",
        quote(&json),
        quote(args.url.as_str())
    )?;
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        writeln!(out, "  -H {} \\", quote(&format!("{name}: {value}")))?;
    }
    writeln!(out, "  --data-binary @-")
}
