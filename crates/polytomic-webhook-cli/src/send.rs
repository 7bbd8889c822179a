//! `send`: records from a file or stdin, batched and delivered as Polytomic does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, IsTerminal};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use polytomic_webhook::prelude::RawFields;
use polytomic_webhook::testing::{BodyForm, Delivery, SAMPLE_SYNC_ID};
use reqwest::Url;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::input::{self, Format};
use crate::{EXIT_FAILED, EXIT_USAGE, NAME, USER_AGENT, batches, plural};

/// Bad lines listed one by one before the rest are only counted.
const LISTED_BAD_LINES: usize = 20;

#[derive(Args)]
#[command(
    about = "Send records to a webhook as Polytomic does",
    long_about = "Send records to a webhook as Polytomic does.\n\n\
        Reads records from FILE (or standard input): JSON Lines, one JSON object of fields per \
        line, sent as written (every number exactly; a line that gives a name twice is \
        refused), or CSV, whose header row names the fields (every value is sent as a string). \
        Groups them into batches and POSTs each as a `sync.records` delivery: gzipped JSON, \
        `Authorization: Bearer SECRET`, a fresh `Polytomic-Signature-Timestamp`, \
        `Content-Type: application/json`.\n\n\
        Like Polytomic, the first batch answered with anything but 2xx stops the run (batches \
        already in flight with --concurrency still finish); --keep-going sends the rest. \
        Input lines that are not records are listed with their line numbers and nothing is \
        sent, unless --skip-invalid is given. A summary goes to standard error at the end.",
    after_help = "Examples:\n  \
        polytomic-webhook send --url http://127.0.0.1:8080/webhooks/polytomic --secret s3cret contacts.jsonl\n  \
        polytomic-webhook send --url https://example.com/hook --secret s3cret --batch-size 500 \\\n      \
        --concurrency 4 --metadata team=growth --metadata env=staging contacts.csv\n  \
        printf '{\"email\":\"a@example.com\"}\\n' | POLYTOMIC_WEBHOOK_SECRET=s3cret \\\n      \
        polytomic-webhook send --url http://127.0.0.1:8080/webhooks/polytomic\n\n\
        Exit status: 0 every batch accepted; 1 a batch was refused or could not be delivered; \
        2 bad arguments or input (nothing sent)."
)]
pub(crate) struct SendArgs {
    /// Where to POST the deliveries (http or https).
    #[arg(long, value_name = "URL", value_parser = webhook_url)]
    url: Url,

    /// The secret of the webhook connection, sent as `Authorization: Bearer SECRET`.
    #[arg(long, env = "POLYTOMIC_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,

    /// Records to send; standard input when absent or `-`.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,

    /// The input format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,

    /// Records per delivery (Polytomic's `batch_size`).
    #[arg(long, default_value = "100", value_name = "N")]
    batch_size: NonZeroUsize,

    /// Deliveries in flight at once.
    #[arg(long, default_value = "1", value_name = "N")]
    concurrency: NonZeroUsize,

    /// The sync id every delivery carries (`object.id`).
    #[arg(long, default_value = SAMPLE_SYNC_ID, value_name = "ID")]
    sync_id: String,

    /// The sync name every delivery carries (`object.name`).
    #[arg(long, default_value = "polytomic-webhook send", value_name = "NAME")]
    sync_name: String,

    /// A key-value pair of sync metadata (`object.metadata`); repeat for more.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = key_value)]
    metadata: Vec<(String, String)>,

    /// How the body is encoded.
    #[arg(long, value_enum, default_value_t = Form::Gzip)]
    body: Form,

    /// Send every batch even after one is refused.
    #[arg(long)]
    keep_going: bool,

    /// Send the valid records when some input lines are not records.
    #[arg(long)]
    skip_invalid: bool,

    /// Give up on a delivery after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
}

/// The body forms, as command-line values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Form {
    /// Gzip with `Content-Encoding: gzip`.
    Gzip,
    /// Gzip without `Content-Encoding`, as in Polytomic's sample request.
    GzipNoHeader,
    /// Plain JSON.
    Identity,
}

impl From<Form> for BodyForm {
    fn from(form: Form) -> Self {
        match form {
            Form::Gzip => Self::Gzip,
            Form::GzipNoHeader => Self::GzipWithoutHeader,
            Form::Identity => Self::Identity,
        }
    }
}

/// An http or https URL. Without a scheme, `127.0.0.1:8080` would fail with url's "relative
/// URL without a base" and `localhost:8080` would parse with the scheme `localhost`: both get
/// the suggestion to add `http://`.
pub(crate) fn webhook_url(text: &str) -> Result<Url, String> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        _ if !text.contains("://") && Url::parse(&format!("http://{text}")).is_ok() => Err(
            format!("the URL has no http:// or https:// in front (did you mean http://{text} ?)"),
        ),
        Ok(url) => Err(format!(
            "expected an http:// or https:// URL, not {}://",
            url.scheme()
        )),
        Err(error) => Err(format!("not a URL: {error}")),
    }
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

pub(crate) async fn run(args: SendArgs) -> ExitCode {
    let path = args.file.as_deref().filter(|path| path.as_os_str() != "-");
    let source = path.map_or_else(|| "<stdin>".to_owned(), |path| path.display().to_string());
    let format = args.format.resolve(path);
    let read = match path {
        Some(path) => File::open(path).and_then(|file| input::read(BufReader::new(file), format)),
        None => input::read(io::stdin().lock(), format),
    };
    let input = match read {
        Ok(input) => input,
        Err(error) => {
            eprintln!("{NAME}: cannot read {source}: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for bad in input.bad.iter().take(LISTED_BAD_LINES) {
        eprintln!("{NAME}: {source}:{}: {}", bad.line, bad.message);
    }
    if input.bad.len() > LISTED_BAD_LINES {
        eprintln!(
            "{NAME}: … and {} more",
            plural(
                (input.bad.len() - LISTED_BAD_LINES) as u64,
                "invalid line",
                "invalid lines"
            )
        );
    }
    if !input.bad.is_empty() {
        let invalid = plural(
            input.bad.len() as u64,
            "invalid input line",
            "invalid input lines",
        );
        if let Some(hint) = format_hint(args.format, format, &input) {
            eprintln!("{NAME}: hint: {hint}");
        }
        if !args.skip_invalid {
            eprintln!(
                "{NAME}: {invalid}; nothing was sent (--skip-invalid sends the valid records)"
            );
            return ExitCode::from(EXIT_USAGE);
        }
        eprintln!("{NAME}: skipping {invalid}");
    }
    let client = match client(args.timeout) {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let summary = deliver(&args, client, input.records).await;
    eprint!("{}", summary.render(&args.url));
    if summary.all_accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// The HTTP client every command sends with; on failure the reason is printed and the exit
/// status returned.
pub(crate) fn client(timeout_secs: u64) -> Result<reqwest::Client, ExitCode> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout_secs))
        // A redirected delivery would be answered by whatever the new location is, not by the
        // receiver: Polytomic does not follow redirects either, so a 3xx is a refusal.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| {
            eprintln!("{NAME}: cannot set up the HTTP client: {}", chain(&error));
            ExitCode::from(EXIT_FAILED)
        })
}

/// A hint when CSV was probably read as JSON Lines: the format was guessed from a file name
/// not ending in `.csv`, and the very first line (a CSV header) was not a record.
fn format_hint(asked: Format, used: Format, input: &input::Input) -> Option<&'static str> {
    let first_line_bad = input.bad.first().is_some_and(|bad| bad.line == 1);
    (asked == Format::Auto && used == Format::Jsonl && first_line_bad).then_some(
        "read as JSON Lines (only a file name ending in .csv is read as CSV); if it is CSV, add --format csv",
    )
}

/// What happened to one batch.
struct Outcome {
    records: u64,
    bytes: u64,
    /// `None` when accepted, otherwise why not.
    refusal: Option<Refusal>,
}

/// Why a batch was not accepted, as the summary groups it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    /// The receiver answered, with this status (and problem `code`).
    Answered(String),
    /// No answer: connection, TLS or timeout failure.
    NotDelivered(String),
}

async fn deliver(args: &SendArgs, client: reqwest::Client, records: Vec<RawFields>) -> Summary {
    let started = Instant::now();
    let batch_size = args.batch_size.get();
    let total_batches = records.len().div_ceil(batch_size);
    let progress = progress_bar(records.len() as u64);
    let mut summary = Summary::default();
    let mut pending = records.into_iter();
    let mut in_flight = JoinSet::new();
    let mut stopped = false;
    loop {
        while !stopped && in_flight.len() < args.concurrency.get() {
            let batch: Vec<RawFields> = pending.by_ref().take(batch_size).collect();
            if batch.is_empty() {
                break;
            }
            let records = batch.len() as u64;
            let delivery = delivery(args, batch);
            in_flight.spawn(send_batch(
                client.clone(),
                delivery,
                records,
                args.url.clone(),
            ));
        }
        let Some(joined) = in_flight.join_next().await else {
            break;
        };
        let outcome = joined.unwrap_or_else(|error| Outcome {
            records: 0,
            bytes: 0,
            refusal: Some(Refusal::NotDelivered(format!("internal error: {error}"))),
        });
        if outcome.refusal.is_some() && !args.keep_going {
            stopped = true;
        }
        summary.add(&outcome);
        progress.inc(outcome.records);
        let elapsed = started.elapsed().as_secs_f64().max(f64::EPSILON);
        progress.set_message(format!(
            "{:.0} records/s; batch {}/{total_batches}, {:.1} batches/s",
            summary.records as f64 / elapsed,
            summary.batches,
            summary.batches as f64 / elapsed
        ));
    }
    progress.finish_and_clear();
    let rest: Vec<RawFields> = pending.collect();
    summary.unsent_records = rest.len() as u64;
    summary.unsent_batches = rest.len().div_ceil(batch_size) as u64;
    summary.elapsed = started.elapsed();
    summary
}

/// The batch as a delivery, built by the same code the `testing` helpers use.
fn delivery(args: &SendArgs, batch: Vec<RawFields>) -> Delivery {
    let delivery = Delivery::new()
        .sync(&args.sync_id, &args.sync_name)
        .secret(&args.secret)
        .form(args.body.into())
        .user_agent(USER_AGENT);
    let delivery = args
        .metadata
        .iter()
        .fold(delivery, |delivery, (key, value)| {
            delivery.metadata(key, value.as_str())
        });
    // As read: every number exactly as written.
    batch.into_iter().fold(delivery, Delivery::record_raw)
}

async fn send_batch(
    client: reqwest::Client,
    delivery: Delivery,
    records: u64,
    url: Url,
) -> Outcome {
    // Encoded here, not when queued, so the timestamp is fresh when the batch leaves.
    let (headers, body) = delivery.encode();
    let bytes = body.len() as u64;
    let response = client
        .post(url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await;
    let refusal = match response {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(Refusal::Answered(refusal(response).await)),
        Err(error) => Some(Refusal::NotDelivered(not_delivered(&error, &url))),
    };
    Outcome {
        records,
        bytes,
        refusal,
    }
}

/// "HTTP 401 Unauthorized, code invalid_token: <detail>" from a refusal's status and problem
/// body (the `detail` is the receiver's own explanation), or "HTTP 302 Found, Location:
/// /landing" for a redirect, which is not followed.
pub(crate) async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let mut reason = format!("HTTP {status}");
    if status.is_redirection() {
        let location = response.headers().get(reqwest::header::LOCATION);
        let location = location.map_or("(none)", |value| {
            value.to_str().unwrap_or("(not readable as text)")
        });
        let _ = write!(reason, ", Location: {location}");
    }
    if let Ok(body) = response.bytes().await {
        if let Ok(problem) = serde_json::from_slice::<Value>(&body) {
            if let Some(code) = problem.get("code").and_then(Value::as_str) {
                let _ = write!(reason, ", code {code}");
            }
            if let Some(detail) = problem.get("detail").and_then(Value::as_str) {
                let _ = write!(reason, ": {detail}");
            }
        }
    }
    reason
}

/// Why a batch got no answer, with a hint for the usual mistakes.
pub(crate) fn not_delivered(error: &reqwest::Error, url: &Url) -> String {
    let causes = causes(error);
    let plain_http = causes.iter().any(|cause| {
        matches!(
            cause.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))
        )
    });
    let refused = causes.iter().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|error| error.kind() == io::ErrorKind::ConnectionRefused)
    });
    let place = match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => url.to_string(),
    };
    let hint = if plain_http {
        let mut http = url.clone();
        let _ = http.set_scheme("http");
        format!("{place} answered in plain HTTP, not TLS: use --url {http}")
    } else if refused {
        format!("nothing is listening at {place}: start the receiver, or check --url")
    } else if error.is_timeout() {
        "no answer within --timeout seconds".to_owned()
    } else {
        return chain(error);
    };
    format!("{}\n    hint: {hint}", chain(error))
}

/// `error` and every cause under it, including the one an `io::Error` wraps (its `source`
/// skips that one, so TLS and connection errors would stay hidden).
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut found = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        found.push(error);
        next = match error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            Some(inner) => Some(inner),
            None => error.source(),
        };
    }
    found
}

/// An error and its causes, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

fn progress_bar(records: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(records), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {human_pos}/{human_len} records, {msg} [{elapsed}]")
    {
        bar.set_style(style);
    }
    bar
}

#[derive(Default)]
struct Summary {
    batches: u64,
    records: u64,
    bytes: u64,
    accepted_batches: u64,
    accepted_records: u64,
    /// Refused or undelivered batches and records, by reason.
    refused: BTreeMap<Refusal, (u64, u64)>,
    unsent_batches: u64,
    unsent_records: u64,
    elapsed: Duration,
}

impl Summary {
    fn add(&mut self, outcome: &Outcome) {
        self.batches += 1;
        self.records += outcome.records;
        self.bytes += outcome.bytes;
        match &outcome.refusal {
            None => {
                self.accepted_batches += 1;
                self.accepted_records += outcome.records;
            }
            Some(reason) => {
                let entry = self.refused.entry(reason.clone()).or_default();
                entry.0 += 1;
                entry.1 += outcome.records;
            }
        }
    }

    fn all_accepted(&self) -> bool {
        self.refused.is_empty() && self.unsent_batches == 0
    }

    /// The summary: what was answered ("accepted", "refused") apart from what never reached a
    /// receiver ("not delivered") and what was never tried ("not sent").
    fn render(&self, url: &Url) -> String {
        let delivered = self.batches
            - self
                .refused
                .iter()
                .filter(|(refusal, _)| matches!(refusal, Refusal::NotDelivered(_)))
                .map(|(_, (count, _))| count)
                .sum::<u64>();
        let mut text = format!(
            "{NAME}: {url}: {} of {} delivered ({} body bytes) in {:.2}s\n",
            delivered,
            plural(self.batches, "batch", "batches"),
            self.bytes,
            self.elapsed.as_secs_f64(),
        );
        let mut line = |label: &str, batches_and_records: String, reason: &str| {
            let _ = writeln!(text, "  {label:<14} {batches_and_records}{reason}");
        };
        line(
            "accepted:",
            batches(self.accepted_batches, self.accepted_records),
            "",
        );
        for (refusal, (count, records)) in &self.refused {
            let (label, reason) = match refusal {
                Refusal::Answered(reason) => ("refused:", reason),
                Refusal::NotDelivered(reason) => ("not delivered:", reason),
            };
            line(label, batches(*count, *records), &format!(": {reason}"));
        }
        if self.unsent_batches > 0 {
            line(
                "not sent:",
                batches(self.unsent_batches, self.unsent_records),
                ": stopped at the first batch not accepted (--keep-going sends the rest)",
            );
        }
        text
    }
}
