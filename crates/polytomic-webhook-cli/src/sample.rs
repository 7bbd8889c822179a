//! `sample`: a delivery body and the curl command that sends it.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;
use polytomic_webhook::testing::{BodyForm, Delivery};
use serde_json::{Value, json};

use crate::{EXIT_FAILED, NAME, USER_AGENT};

#[derive(Args)]
#[command(
    about = "Print a sample delivery body and the curl command that sends it",
    long_about = "Print a sample delivery body and the curl command that sends it.\n\n\
        The body is a `sync.records` delivery with two records, as Polytomic shapes it. The \
        command gzips it and sends it with Polytomic's headers (no `Content-Encoding`, as \
        Polytomic sends none), stamping the time when it runs, so it can be pasted into a shell \
        to try an endpoint by hand. Give --secret the receiver's secret (`serve --secret`).",
    after_help = "Examples:\n  \
        polytomic-webhook sample\n  \
        polytomic-webhook sample --url https://example.com/webhooks/polytomic --secret s3cret\n  \
        polytomic-webhook sample --body-only | gzip > delivery.json.gz"
)]
pub(crate) struct SampleArgs {
    /// The URL the curl command posts to.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/webhooks/polytomic",
        value_name = "URL"
    )]
    url: String,

    /// The secret written into the curl command; by default it reads
    /// `$POLYTOMIC_WEBHOOK_SECRET` when run.
    #[arg(long)]
    secret: Option<String>,

    /// Print only the compact body, for piping.
    #[arg(long)]
    body_only: bool,
}

pub(crate) fn run(args: &SampleArgs) -> ExitCode {
    match write_sample(args, &mut io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{NAME}: cannot write the sample: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn write_sample(args: &SampleArgs, out: &mut impl Write) -> io::Result<()> {
    let (headers, body) = Delivery::new()
        .record_json(json!({"email": "nathan@polytomic.com", "last_login": "2020-12-02T00:00:00Z"}))
        .record_json(json!({"email": "ada@example.com", "last_login": "2021-05-30T09:12:00Z"}))
        .metadata("source", "polytomic-webhook sample")
        .form(BodyForm::Identity)
        .user_agent(USER_AGENT)
        .encode();
    let compact = String::from_utf8_lossy(&body);
    if args.body_only {
        return writeln!(out, "{compact}");
    }
    let pretty = serde_json::from_slice::<Value>(&body)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .map_err(io::Error::other)?;
    writeln!(out, "{pretty}\n")?;
    writeln!(
        out,
        "# Send it as Polytomic does: gzipped, without a Content-Encoding header:"
    )?;
    writeln!(
        out,
        "printf '%s' {} | gzip | curl -sS --fail-with-body -X POST {} \\",
        quote(&compact),
        quote(&args.url)
    )?;
    // The headers the builder sets, except the two that must be computed when curl runs.
    for (name, value) in &headers {
        if name == "authorization" || name == "polytomic-signature-timestamp" {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        writeln!(out, "  -H {} \\", quote(&format!("{name}: {value}")))?;
    }
    match &args.secret {
        Some(secret) => writeln!(
            out,
            "  -H {} \\",
            quote(&format!("Authorization: Bearer {secret}"))
        )?,
        None => writeln!(
            out,
            "  -H \"Authorization: Bearer $POLYTOMIC_WEBHOOK_SECRET\" \\"
        )?,
    }
    writeln!(
        out,
        "  -H \"Polytomic-Signature-Timestamp: $(date -u +%Y-%m-%dT%H:%M:%SZ)\" \\"
    )?;
    writeln!(out, "  --data-binary @-")
}

/// `text` as one single-quoted shell word.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
