//! The built `polytomic-webhook` binary, driven over loopback.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{any, post};
use serde_json::Value;

const SECRET: &str = "cli-test-secret";
const RECORDS: usize = 10_000;

fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_polytomic-webhook"));
    command
        .env_remove("POLYTOMIC_WEBHOOK_SECRET")
        .env_remove("POLYTOMIC_WEBHOOK_PREVIOUS_SECRET")
        .env_remove("POLYTOMIC_EVENTS_SECRET");
    command
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "polytomic-webhook-cli-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `serve`, with its address and the rest of its stderr collected in the background.
struct Serve {
    child: Child,
    url: String,
    /// `http://ADDR/metrics` when --metrics-addr moved the metrics.
    metrics_url: Option<String>,
    stderr: JoinHandle<String>,
}

impl Serve {
    /// `serve --secret SECRET` on a free port, writing to `out`, with `extra` arguments.
    fn start(out: &std::path::Path, extra: &[&str]) -> Self {
        let mut command = bin();
        command.args(["serve", "--secret", SECRET]).args(extra);
        Self::spawn(command, out)
    }

    /// `command` (a `serve` without --addr and --out) on a free port, writing to `out`.
    fn spawn(mut command: Command, out: &std::path::Path) -> Self {
        command.args(["--addr", "127.0.0.1:0", "--out"]).arg(out);
        Self::spawn_as_given(command)
    }

    /// Starts `command` (a `serve` on port 0, with its own --out) and waits until it says
    /// where it listens.
    fn spawn_as_given(command: Command) -> Self {
        Self::spawn_with_stdout(command, Stdio::null())
    }

    /// [`Serve::spawn_as_given`], its standard output sent to `stdout`.
    fn spawn_with_stdout(mut command: Command, stdout: Stdio) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut metrics_url = None;
        let mut early = String::new();
        let url = loop {
            let mut line = String::new();
            stderr.read_line(&mut line).unwrap();
            if let Some((_, url)) = line.trim().split_once("metrics on ") {
                metrics_url = Some(url.to_owned());
                continue;
            }
            if line.contains("warning: ") {
                early.push_str(&line);
                continue;
            }
            break line
                .trim()
                .split_once("listening on ")
                .unwrap_or_else(|| panic!("no address in {line:?}"))
                .1
                .to_owned();
        };
        let stderr = std::thread::spawn(move || {
            let mut rest = early;
            stderr.read_to_string(&mut rest).unwrap();
            rest
        });
        Self {
            child,
            url,
            metrics_url,
            stderr,
        }
    }

    /// Waits until `/readyz` answers 200: with --sink, `serve` listens before its sink is open.
    fn ready(self) -> Self {
        let readyz = self.url.replace("/webhooks/polytomic", "/readyz");
        let started = std::time::Instant::now();
        while http_get(&readyz).0 != 200 {
            assert!(started.elapsed().as_secs() < 30, "the sink never opened");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self
    }

    /// Ctrl-C, then the exit status must be success; returns the summary.
    fn interrupt(mut self) -> String {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(self.child.wait().unwrap().success());
        self.stderr.join().unwrap()
    }
}

fn send(url: &str, file: &std::path::Path, extra: &[&str]) -> Output {
    bin()
        .args(["send", "--url", url, "--secret", SECRET])
        .args(extra)
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sync_id(run: usize) -> String {
    format!("00000000-0000-4000-8000-{run:012}")
}

#[test]
fn send_to_serve_delivers_every_record_exactly_once() {
    let dir = scratch("roundtrip");
    let jsonl = dir.join("records.jsonl");
    let csv = dir.join("records.csv");
    let mut text = String::new();
    for i in 0..RECORDS {
        writeln!(
            text,
            r#"{{"id":"j{i}","n":{i},"email":"user{i}@example.com"}}"#
        )
        .unwrap();
    }
    std::fs::write(&jsonl, text).unwrap();
    let mut text = String::from("id,name,email\n");
    for i in 0..RECORDS {
        writeln!(text, "c{i},\"Doe, Jane {i}\",user{i}@example.com").unwrap();
    }
    std::fs::write(&csv, text).unwrap();

    let out = dir.join("batches.jsonl");
    let serve = Serve::start(&out, &[]);
    // (input, batch size, concurrency, body form)
    let runs = [
        (&jsonl, 1000, 4, "gzip"),
        (&jsonl, 37, 8, "identity"),
        (&csv, 100, 4, "gzip"),
        (&csv, 999, 2, "gzip-no-header"),
    ];
    for (run, (file, batch_size, concurrency, body)) in runs.iter().enumerate() {
        let output = send(
            &serve.url,
            file,
            &[
                "--batch-size",
                &batch_size.to_string(),
                "--concurrency",
                &concurrency.to_string(),
                "--body",
                body,
                "--sync-id",
                &sync_id(run),
                "--metadata",
                "run=roundtrip",
            ],
        );
        let summary = stderr(&output);
        assert!(output.status.success(), "run {run}: {summary}");
        let batches = RECORDS.div_ceil(*batch_size);
        assert!(
            summary.contains(&format!(
                "accepted:      {batches} batches ({RECORDS} records)"
            )),
            "run {run}: {summary}"
        );
    }
    // A refused batch shows up in both summaries with its status and code.
    let refused = bin()
        .args(["send", "--url", &serve.url, "--secret", "not-the-secret"])
        .arg(&jsonl)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    // With the problem's detail, the receiver's own explanation.
    assert!(
        stderr(&refused).contains(
            "refused:       1 batch (100 records): HTTP 401 Unauthorized, code invalid_token: \
             the bearer token does not match any configured secret"
        ),
        "{}",
        stderr(&refused)
    );

    // Every line is one batch; every record of every run arrived exactly once.
    let mut seen: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let batch: Value = serde_json::from_str(line).unwrap();
        assert_eq!(batch["metadata"]["run"], "roundtrip");
        let entry = seen
            .entry(batch["id"].as_str().unwrap().to_owned())
            .or_default();
        entry.0 += 1;
        for record in batch["records"].as_array().unwrap() {
            assert_eq!(record["hash"].as_str().unwrap().len(), 16);
            entry
                .1
                .push(record["fields"]["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen.len(), runs.len());
    for (run, (file, batch_size, ..)) in runs.iter().enumerate() {
        let (batches, ids) = seen.remove(&sync_id(run)).unwrap();
        assert_eq!(batches, RECORDS.div_ceil(*batch_size), "run {run}");
        let prefix = if *file == &csv { "c" } else { "j" };
        let mut expected: Vec<String> = (0..RECORDS).map(|i| format!("{prefix}{i}")).collect();
        let mut ids = ids;
        ids.sort();
        expected.sort();
        assert_eq!(ids, expected, "run {run}");
    }

    let summary = serve.interrupt();
    let batches: usize = runs.iter().map(|run| RECORDS.div_ceil(run.1)).sum();
    assert!(
        summary.contains(&format!(
            "accepted {batches} batches ({} records)",
            RECORDS * runs.len()
        )),
        "{summary}"
    );
    assert!(
        summary.contains("refused 1: 401 invalid_token"),
        "{summary}"
    );
}

/// A receiver in this process that answers every POST with `status` and counts them.
fn counting_server(status: StatusCode) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = Router::new().fallback(post(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { (status, "boom") }
    }));
    (spawn_server(app), hits)
}

/// Serves `app` on a loopback port from a thread of its own; returns its base URL (`/`).
fn spawn_server(app: Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}/")
}

fn jsonl_file(dir: &std::path::Path, records: usize) -> PathBuf {
    let path = dir.join("records.jsonl");
    let text: String = (0..records).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_first_refused_batch_stops_the_run() {
    let dir = scratch("refused");
    let file = jsonl_file(&dir, 1000);
    let (url, hits) = counting_server(StatusCode::INTERNAL_SERVER_ERROR);
    let output = send(&url, &file, &["--batch-size", "100"]);
    let summary = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(
        summary.contains("refused:       1 batch (100 records): HTTP 500 Internal Server Error"),
        "{summary}"
    );
    assert!(
        summary.contains("not sent:      9 batches (900 records): stopped"),
        "{summary}"
    );

    let output = send(&url, &file, &["--batch-size", "100", "--keep-going"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(hits.load(Ordering::SeqCst), 11);
    assert!(stderr(&output).contains("refused:       10 batches (1000 records)"));

    // No answer at all is a failure too, told apart from a refusal, with a hint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let output = send(&format!("http://{addr}/"), &file, &["--batch-size", "100"]);
    let summary = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert!(summary.contains("0 of 1 batch delivered"), "{summary}");
    assert!(!summary.contains("sent 1 batch"), "{summary}");
    assert!(
        summary.contains("not delivered: 1 batch (100 records): error sending request"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "hint: nothing is listening at {addr}: start the receiver, or check --url"
        )),
        "{summary}"
    );
    assert!(!summary.contains("refused:"), "{summary}");
    assert!(summary.contains("not sent:      9 batches"), "{summary}");
}

#[test]
fn a_malformed_line_is_reported_by_number_and_nothing_is_sent() {
    let dir = scratch("malformed");
    let (url, hits) = counting_server(StatusCode::OK);

    let jsonl = dir.join("bad.jsonl");
    std::fs::write(
        &jsonl,
        "{\"id\":1}\n{\"id\":2}\n{\"id\":\n[4]\n{\"id\":5}\n",
    )
    .unwrap();
    let output = send(&url, &jsonl, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("bad.jsonl:3: invalid JSON"), "{message}");
    assert!(
        message.contains("bad.jsonl:4: expected a JSON object of fields, found an array"),
        "{message}"
    );
    assert!(
        message.contains("2 invalid input lines; nothing was sent"),
        "{message}"
    );

    let csv = dir.join("bad.csv");
    std::fs::write(&csv, "id,email\n1,a@example.com\n2,b@example.com\n3\n").unwrap();
    let output = send(&url, &csv, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("bad.csv:4: expected 2 fields"),
        "{message}"
    );
    assert!(
        message.contains("1 invalid input line; nothing was sent"),
        "{message}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    let output = send(&url, &jsonl, &["--skip-invalid"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("accepted:      1 batch (3 records)"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn send_reads_standard_input() {
    let (url, hits) = counting_server(StatusCode::OK);
    let mut child = bin()
        .args(["send", "--url", &url])
        .env("POLYTOMIC_WEBHOOK_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn sink_arguments_that_do_not_fit_are_usage_errors_naming_no_password() {
    let dir = scratch("sink-usage");
    let db = format!("sqlite:{}", dir.join("records.db").display());
    let redis = "redis://:hunter2@127.0.0.1:1";
    for args in [
        &["serve", "--secret", SECRET, "--key-field", "id"][..],
        &[
            "serve", "--secret", SECRET, "--sink", &db, "--out", "x.jsonl",
        ],
        &["serve", "--secret", SECRET, "--sink", redis, "--fsync"],
        &["serve", "--secret", SECRET, "--sink", "postgres://db"],
        &[
            "dump",
            "--sink",
            &format!("sqlite:{}", dir.join("missing.db").display()),
        ],
    ] {
        let output = bin().args(args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains("hunter2"), "{}", stderr(&output));
    }
    assert!(!dir.join("missing.db").exists(), "dump created the file");
}

#[test]
fn every_command_has_help_with_an_example() {
    for command in [
        &["--help"][..],
        &["send", "--help"],
        &["serve", "--help"],
        &["sample", "--help"],
        &["send-event", "--help"],
        &["dump", "--help"],
    ] {
        let output = bin().args(command).output().unwrap();
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).unwrap();
        assert!(
            help.contains("Examples:\n  polytomic-webhook "),
            "{command:?}: {help}"
        );
        assert!(
            help.contains("Exit status") || command[0] == "sample",
            "{command:?}"
        );
    }
}

#[test]
fn serve_help_says_each_secret_is_taken_whole_and_how_to_rotate() {
    let output = bin().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "POLYTOMIC_WEBHOOK_SECRET",
        "comma",
        "--previous-secret",
        "POLYTOMIC_WEBHOOK_PREVIOUS_SECRET",
        "batch_not_stored",
        "--fsync",
    ] {
        assert!(help.contains(expected), "{expected} missing from {help}");
    }
}

#[test]
fn sample_prints_a_valid_delivery_and_a_curl_command() {
    let output = bin().args(["sample", "--body-only"]).output().unwrap();
    assert!(output.status.success());
    let batch: polytomic_webhook::event::SyncRecords =
        polytomic_webhook::event::parse_sync_records(
            &output.stdout,
            &polytomic_webhook::event::EventConfig::default(),
        )
        .unwrap();
    assert_eq!(batch.len(), 2);

    let output = bin()
        .args([
            "sample",
            "--url",
            "https://example.com/hook",
            "--secret",
            "it's",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("| gzip | curl -sS --fail-with-body -X POST 'https://example.com/hook'"),
        "{text}"
    );
    assert!(
        text.contains(r"-H 'Authorization: Bearer it'\''s'"),
        "{text}"
    );
    // Gzip without Content-Encoding, as Polytomic sends it.
    assert!(
        !text.to_ascii_lowercase().contains("-h 'content-encoding"),
        "{text}"
    );
    assert!(
        text.contains("Polytomic-Signature-Timestamp: $(date -u"),
        "{text}"
    );
    assert!(text.contains("\"event\": \"sync.records\""), "{text}");
}

#[test]
fn a_url_without_a_scheme_gets_a_suggestion() {
    let dir = scratch("scheme");
    let file = jsonl_file(&dir, 1);
    for (url, suggestion) in [
        ("127.0.0.1:8080", "did you mean http://127.0.0.1:8080 ?"),
        (
            "localhost:8080/hook",
            "did you mean http://localhost:8080/hook ?",
        ),
    ] {
        let output = send(url, &file, &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert!(message.contains("no http:// or https://"), "{message}");
        assert!(message.contains(suggestion), "{message}");
        assert!(!message.contains("relative URL"), "{message}");
    }
}

#[test]
fn https_against_a_plain_http_port_is_not_delivered_with_a_hint() {
    let dir = scratch("https");
    let file = jsonl_file(&dir, 3);
    let (url, hits) = counting_server(StatusCode::OK);
    let https = url.replacen("http://", "https://", 1);
    let output = send(&https, &file, &[]);
    let summary = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert!(
        summary.contains("not delivered: 1 batch (3 records)"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("answered in plain HTTP, not TLS: use --url {url}")),
        "{summary}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn a_redirect_is_not_followed_and_counts_as_not_accepted() {
    let dir = scratch("redirect");
    let file = jsonl_file(&dir, 3);
    let landed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&landed);
    let app = Router::new()
        .route(
            "/",
            post(|| async { (StatusCode::FOUND, [("location", "/landing")]) }),
        )
        // Any method: a client that follows a 302 may turn the POST into a GET.
        .route(
            "/landing",
            any(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::OK }
            }),
        );
    let url = spawn_server(app);
    let output = send(&url, &file, &[]);
    let summary = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert_eq!(
        landed.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    assert!(
        summary.contains("refused:       1 batch (3 records): HTTP 302 Found, Location: /landing"),
        "{summary}"
    );
    assert!(summary.contains("accepted:      0 batches"), "{summary}");
    assert!(summary.contains("1 of 1 batch delivered"), "{summary}");
}

#[test]
fn a_csv_header_naming_a_column_twice_is_refused_before_anything_is_sent() {
    let dir = scratch("duplicate-column");
    let csv = dir.join("contacts.csv");
    std::fs::write(
        &csv,
        "id,email,email\n1,first@example.com,second@example.com\n",
    )
    .unwrap();
    let (url, hits) = counting_server(StatusCode::OK);
    let output = send(&url, &csv, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("names the column `email` more than once"),
        "{message}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn csv_in_a_file_not_named_csv_gets_a_format_hint() {
    let dir = scratch("format");
    let (url, hits) = counting_server(StatusCode::OK);
    let txt = dir.join("contacts.txt");
    std::fs::write(&txt, "email,plan\nada@example.com,pro\n").unwrap();
    let hint = "if it is CSV, add --format csv";

    let output = send(&url, &txt, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert_eq!(message.matches(hint).count(), 1, "{message}");

    // Asked for by name, JSON Lines gets no hint; --format csv reads the file.
    let output = send(&url, &txt, &["--format", "jsonl"]);
    assert!(!stderr(&output).contains(hint), "{}", stderr(&output));
    let output = send(&url, &txt, &["--format", "csv"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A JSON Lines file whose first line is fine is not suspected of being CSV.
    let jsonl = dir.join("records.txt");
    std::fs::write(&jsonl, "{\"id\":1}\nnot json\n").unwrap();
    let output = send(&url, &jsonl, &[]);
    assert!(!stderr(&output).contains(hint), "{}", stderr(&output));
}

/// The try-it block of this crate's README (the workspace README shows the same block; a test
/// in `tests/` keeps the two identical), split into its commands: continuation lines joined,
/// comments and blank lines dropped.
fn readme_cli_block() -> Vec<String> {
    let readme = include_str!("../README.md");
    let section = readme
        .split_once("## Try it without writing code")
        .unwrap()
        .1;
    let block = section
        .split_once("```sh\n")
        .unwrap()
        .1
        .split_once("```")
        .unwrap()
        .0;
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

/// Runs `script` with `sh` in `dir` and returns its stdout, asserting success.
fn shell(dir: &std::path::Path, script: &str) -> String {
    let output = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run sh: {error}"));
    assert!(
        output.status.success(),
        "{script}\nfailed: {}",
        stderr(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The README's CLI block, pasted in order: `serve`, then the curl `sample` prints, then the
/// README's own curl command, then `send`. Only the port differs (a free one instead of 8080),
/// so runs cannot collide.
#[test]
fn the_readmes_cli_block_works_when_run_in_order() {
    let curl = Command::new("curl").arg("--version").output();
    assert!(
        curl.is_ok_and(|output| output.status.success()),
        "this test runs the README's curl command: install curl"
    );
    let dir = scratch("readme");
    let readme_addr = "127.0.0.1:8080";
    let mut serve: Option<Serve> = None;
    let mut ran = Vec::new();
    for command in readme_cli_block() {
        if command.starts_with("cargo ") {
            continue; // Installs the binary this test already has.
        }
        let Some(args) = command.strip_prefix("polytomic-webhook ") else {
            let Some(serve) = &serve else {
                shell(&dir, &command);
                continue;
            };
            let host = serve.url.split('/').nth(2).unwrap();
            let answer = shell(&dir, &command.replace(readme_addr, host));
            if command.contains("curl ") {
                ran.push("curl".to_owned());
                assert_eq!(answer, r#"{"accepted":1}"#, "{command}");
            }
            continue;
        };
        let mut args: Vec<String> = args
            .split_whitespace()
            // A comment after the command ends it.
            .take_while(|arg| !arg.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert!(
            !args.iter().any(|arg| arg.contains(['\'', '"', '$'])),
            "quoted arguments in the README's CLI block: extend this test ({command})"
        );
        let subcommand = args[0].clone();
        ran.push(subcommand.clone());
        if subcommand == "serve" {
            for arg in &mut args {
                *arg = arg.replace(readme_addr, "127.0.0.1:0");
            }
            let mut command = bin();
            command.args(&args).current_dir(&dir);
            serve = Some(Serve::spawn_as_given(command));
            continue;
        }
        let url = &serve.as_ref().expect("serve runs first").url;
        let host = url.split('/').nth(2).unwrap();
        for arg in &mut args {
            *arg = arg.replace(readme_addr, host);
        }
        let output = bin().args(&args).current_dir(&dir).output().unwrap();
        assert!(output.status.success(), "{command}: {}", stderr(&output));
        match subcommand.as_str() {
            "sample" => {
                // What a user pastes: the printed command, from `printf` to its end.
                let text = String::from_utf8(output.stdout).unwrap();
                let curl = &text[text.find("printf '%s'").unwrap()..];
                let answer = shell(&dir, curl);
                assert_eq!(answer, r#"{"accepted":2}"#, "{curl}");
            }
            "send" => {
                let summary = stderr(&output);
                assert!(summary.contains("1 of 1 batch delivered"), "{summary}");
            }
            other => panic!("the README's CLI block runs `{other}`: extend this test"),
        }
    }
    assert_eq!(ran, ["serve", "sample", "curl", "send"]);

    let summary = serve.unwrap().interrupt();
    assert!(
        summary.contains("accepted 3 batches (5 records)"),
        "{summary}"
    );
    assert!(
        summary.contains("ignored 0 unknown events; refused 0 deliveries"),
        "{summary}"
    );
    let out = std::fs::read_to_string(dir.join("batches.jsonl")).unwrap();
    assert_eq!(out.lines().count(), 3, "{out}");
}

#[test]
fn the_serve_summary_counts_in_singular_and_plural() {
    let dir = scratch("plural");
    let serve = Serve::start(&dir.join("batches.jsonl"), &[]);
    let output = send(&serve.url, &jsonl_file(&dir, 1), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("accepted:      1 batch (1 record)"),
        "{}",
        stderr(&output)
    );
    let wrong = bin()
        .args(["send", "--url", &serve.url, "--secret", "not-the-secret"])
        .arg(jsonl_file(&dir, 1))
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    let summary = serve.interrupt();
    assert!(
        summary.contains("accepted 1 batch (1 record) in"),
        "{summary}"
    );
    assert!(
        summary.contains("ignored 0 unknown events; refused 1 delivery"),
        "{summary}"
    );
}

#[test]
fn serve_listens_on_the_receiver_examples_path_by_default() {
    let dir = scratch("default-path");
    let file = jsonl_file(&dir, 2);
    let serve = Serve::start(&dir.join("batches.jsonl"), &[]);
    let base = serve
        .url
        .strip_suffix("/webhooks/polytomic")
        .unwrap_or_else(|| {
            panic!(
                "serve does not listen on /webhooks/polytomic: {}",
                serve.url
            )
        });
    let output = send(&format!("{base}/webhooks/polytomic"), &file, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = send(&format!("{base}/"), &file, &[]);
    assert!(stderr(&output).contains("HTTP 404"), "{}", stderr(&output));
    serve.interrupt();
}

#[test]
fn serve_takes_one_secret_verbatim_and_the_previous_one_separately() {
    let dir = scratch("secrets");
    let file = jsonl_file(&dir, 1);
    let out = dir.join("batches.jsonl");
    let mut command = bin();
    command
        .arg("serve")
        .env("POLYTOMIC_WEBHOOK_SECRET", "alpha,beta")
        .env("POLYTOMIC_WEBHOOK_PREVIOUS_SECRET", SECRET);
    let serve = Serve::spawn(command, &out);
    let send_with = |secret: &str| {
        bin()
            .args(["send", "--url", &serve.url, "--secret", secret])
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for (secret, accepted) in [
        ("alpha", false),
        ("beta", false),
        ("alpha,beta", true),
        (SECRET, true),
    ] {
        let output = send_with(secret);
        assert_eq!(
            output.status.success(),
            accepted,
            "{secret}: {}",
            stderr(&output)
        );
        if !accepted {
            assert!(
                stderr(&output).contains("invalid_token"),
                "{}",
                stderr(&output)
            );
        }
    }
    let summary = serve.interrupt();
    assert!(summary.contains("accepted 2 batches"), "{summary}");
    assert!(
        summary.contains("refused 2: 401 invalid_token"),
        "{summary}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
}

/// `/dev/full` takes no byte: every batch is refused 503 `batch_not_stored`, never 200.
#[cfg(target_os = "linux")]
#[test]
fn serve_answers_batch_not_stored_when_the_output_is_full() {
    let dir = scratch("full");
    let file = jsonl_file(&dir, 2);
    let serve = Serve::start(std::path::Path::new("/dev/full"), &[]);
    let output = send(&serve.url, &file, &[]);
    let summary = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert!(
        summary.contains("HTTP 503 Service Unavailable, code batch_not_stored"),
        "{summary}"
    );
    let summary = serve.interrupt();
    assert!(summary.contains("accepted 0 batches"), "{summary}");
    assert!(
        summary.contains("refused 1: 503 batch_not_stored"),
        "{summary}"
    );
}

/// A client that sends half a request head and then nothing is disconnected once the
/// header-read timeout (10 s) has passed.
#[test]
fn serve_closes_a_connection_that_sent_half_its_headers() {
    use std::io::Write;

    let dir = scratch("half-headers");
    let serve = Serve::start(&dir.join("batches.jsonl"), &[]);
    let addr = serve
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /webhooks/polytomic HTTP/1.1\r\nHost: {addr}\r\nAuthor"
    )
    .unwrap();
    // A generous bound past the 10 s timeout: this asserts that it closes, not how fast.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    // Closed means end of stream (or a reset); only the read timeout means still open.
    let read = stream.read_to_end(&mut rest);
    let still_open = matches!(
        &read,
        Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    );
    assert!(!still_open, "the connection is still open: {read:?}");
    serve.interrupt();
}

/// What a test server keeps: one entry per request it took.
type Kept<T> = Arc<std::sync::Mutex<Vec<T>>>;

/// An Events receiver (signature check, dedup) that keeps each new event's type and payload
/// text, as received.
fn events_server() -> (String, Kept<(String, String)>) {
    use polytomic_webhook::dedup::{DedupLayer, MemoryEventIdStore};
    use polytomic_webhook::prelude::*;

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    let config = PolytomicOrgEventsConfig::default().secrets(SigningSecrets::new(SECRET).unwrap());
    let app = Router::new()
        .route(
            "/webhooks/polytomic/events",
            post(move |event: PolytomicOrgEvent| async move {
                keep.lock().unwrap().push((
                    event.kind().as_str().to_owned(),
                    event.payload().as_str().to_owned(),
                ));
                "ok"
            }),
        )
        .layer(DedupLayer::new(MemoryEventIdStore::new(10)))
        .layer(PolytomicOrgEventsLayer::new(config).unwrap());
    (spawn_server(app), seen)
}

#[test]
fn send_event_signs_and_sends_one_event_and_a_repeat_is_a_duplicate() {
    let (base, seen) = events_server();
    let url = format!("{base}webhooks/polytomic/events");
    let dir = scratch("send-event");
    let payload = dir.join("payload.json");
    std::fs::write(&payload, r#"{"sync_id":"s-1"}"#).unwrap();
    let send = |extra: &[&str]| {
        bin()
            .args(["send-event", "--type", "sync.completed", "--url", &url])
            .args(["--id", "evt-cli-1", "--payload-file"])
            .arg(&payload)
            .args(["--total-records", "120"])
            .args(extra)
            .output()
            .unwrap()
    };
    let first = send(&["--secret", SECRET, "--gzip", "--encoding", "base64"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("accepted: HTTP 200"),
        "{}",
        stderr(&first)
    );
    let again = send(&["--secret", SECRET]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("a duplicate"), "{}", stderr(&again));
    let wrong = send(&["--secret", "not-the-secret"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("invalid_signature"),
        "{}",
        stderr(&wrong)
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [(
            "sync.completed".to_owned(),
            r#"{"sync_id":"s-1","total_records":120}"#.to_owned()
        )]
    );
}

#[test]
fn send_event_curl_prints_a_command_whose_signature_matches_its_body() {
    let output = bin()
        .args(["send-event", "--type", "sync.failed", "--curl", "--gzip"])
        .env("POLYTOMIC_EVENTS_SECRET", "it's-secret")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("printf '%s' '{"), "{text}");
    assert!(text.contains("| gzip | curl -sS --fail-with-body -X POST 'http://127.0.0.1:8080/webhooks/polytomic/events'"), "{text}");
    assert!(text.contains("-H 'content-encoding: gzip'"), "{text}");
    // The JSON between the first pair of quotes (it holds no single quote), and the signature.
    let json = text.split('\'').nth(3).unwrap();
    let signature = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("-H 'polytomic-signature: "))
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    let secrets = polytomic_webhook::auth::SigningSecrets::new("it's-secret").unwrap();
    assert_eq!(
        secrets.verify_header(signature.as_bytes(), json.as_bytes()),
        Ok(())
    );
    let event: Value = serde_json::from_str(json).unwrap();
    assert_eq!(event["type"], "sync.failed");
}

/// `GET url` (`http://ADDR/PATH`) over a plain HTTP/1.1 connection: the status code and body.
fn http_get(url: &str) -> (u16, String) {
    http_request(url, "GET", &axum::http::HeaderMap::new(), b"")
}

/// `json` POSTed to `url` (`http://ADDR/PATH`) as a delivery built by `polytomic_webhook::testing`
/// with the JSON as it is: the status code and body of the answer.
fn post_json(url: &str, json: &[u8]) -> (u16, String) {
    use polytomic_webhook::testing::{BodyForm, Delivery};

    let (headers, body) = Delivery::new()
        .secret(SECRET)
        .form(BodyForm::Identity)
        .raw_json(json)
        .encode();
    http_request(url, "POST", &headers, &body)
}

/// One request over a plain HTTP/1.1 connection: the status code and body of the answer.
fn http_request(
    url: &str,
    method: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (u16, String) {
    use std::io::Write;

    let (addr, path) = url.trim_start_matches("http://").split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        let _ = write!(head, "{name}: {}\r\n", value.to_str().unwrap());
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    // A server that never answers fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn serve_answers_readyz_and_metrics_on_its_port_or_metrics_on_their_own() {
    let dir = scratch("ops");
    let file = jsonl_file(&dir, 3);
    let serve = Serve::start(&dir.join("batches.jsonl"), &[]);
    let base = serve
        .url
        .strip_suffix("/webhooks/polytomic")
        .unwrap()
        .to_owned();
    assert_eq!(
        http_get(&format!("{base}/readyz")),
        (200, "ready\n".to_owned())
    );
    let output = send(&serve.url, &file, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (status, text) = http_get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"polytomic_webhook_deliveries_total{webhook="batch",outcome="accepted",code="none"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"polytomic_webhook_records_total{result="accepted"} 3"#),
        "{text}"
    );
    // The operations routes are not deliveries: the summary counts none of them.
    let summary = serve.interrupt();
    assert!(
        summary.contains("ignored 0 unknown events; refused 0"),
        "{summary}"
    );

    let serve = Serve::start(
        &dir.join("batches.jsonl"),
        &["--metrics-addr", "127.0.0.1:0"],
    );
    let metrics_url = serve
        .metrics_url
        .clone()
        .expect("serve says where the metrics are");
    let base = serve
        .url
        .strip_suffix("/webhooks/polytomic")
        .unwrap()
        .to_owned();
    // Moved away, /metrics is a path like any other, behind the webhook layer.
    assert_eq!(http_get(&format!("{base}/metrics")).0, 401);
    let output = send(&serve.url, &file, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (status, text) = http_get(&metrics_url);
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"polytomic_webhook_records_total{result="accepted"} 3"#),
        "{text}"
    );
    serve.interrupt();
}

#[test]
fn serve_refuses_a_webhook_path_its_own_routes_take() {
    let output = bin()
        .args(["serve", "--secret", SECRET, "--path", "/metrics"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("taken by the server's own route"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn serve_needs_room_for_at_least_one_delivery() {
    let output = bin()
        .args(["serve", "--secret", SECRET, "--max-in-flight", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("at least 1"),
        "{}",
        stderr(&output)
    );
}

/// A batch as senders indent it: two spaces and LF (Python's `json.dumps(indent=2)`, Go's
/// `json.MarshalIndent`), CRLF line ends, tabs; each record carries a number no float holds.
fn indented_deliveries() -> [String; 3] {
    let pretty = (0..3)
        .map(|run| {
            format!(
                "{{\n  \"event\": \"sync.records\",\n  \"object\": {{\n    \"id\": \"{}\",\n    \
                 \"name\": \"Indented  sync\",\n    \"records\": [\n      {{\n        \
                 \"hash\": \"h{run}\",\n        \"fields\": {{\n          \"id\": {run},\n          \
                 \"big\": 123456789012345678901234567890\n        }}\n      }}\n    ],\n    \
                 \"metadata\": {{\n      \"team\": \"a  b\"\n    }}\n  }}\n}}\n",
                sync_id(run)
            )
        })
        .collect::<Vec<_>>();
    let tabs = pretty[2]
        .lines()
        .map(|text| {
            let body = text.trim_start_matches(' ');
            format!("{}{body}\n", "\t".repeat((text.len() - body.len()) / 2))
        })
        .collect();
    [pretty[0].clone(), pretty[1].replace('\n', "\r\n"), tabs]
}

/// Every line of `text` is one JSON document; they are returned.
fn one_document_per_line(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}")))
        .collect()
}

#[test]
fn indented_deliveries_are_one_compact_line_each_in_serve_out_and_in_dump() {
    let dir = scratch("indented");
    let out = dir.join("batches.jsonl");
    let db = dir.join("records.db");
    let lines = Serve::start(&out, &[]);
    let sink = Serve::spawn_as_given({
        let mut command = bin();
        command.args(["serve", "--secret", SECRET, "--addr", "127.0.0.1:0"]);
        command
            .arg("--sink")
            .arg(format!("sqlite:{}", db.display()));
        command
    })
    .ready();
    for body in indented_deliveries() {
        for serve in [&lines, &sink] {
            let (status, answer) = post_json(&serve.url, body.as_bytes());
            assert_eq!(status, 200, "{answer}");
        }
    }
    lines.interrupt();
    sink.interrupt();
    let text = std::fs::read_to_string(&out).unwrap();
    let batches = one_document_per_line(&text);
    assert_eq!(batches.len(), 3, "{text}");
    assert!(text.contains(r#""fields":{"id":2,"big":123456789012345678901234567890}}],"metadata":{"team":"a  b"}}"#), "{text}");
    let dump = bin()
        .args(["dump", "--sink"])
        .arg(format!("sqlite:{}", db.display()))
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", stderr(&dump));
    let text = String::from_utf8(dump.stdout).unwrap();
    assert_eq!(one_document_per_line(&text).len(), 3, "{text}");
    assert!(
        text.contains(r#""fields":{"id":1,"big":123456789012345678901234567890}}"#),
        "{text}"
    );
}

/// What a `serve` killed mid-line (SIGKILL) leaves: a last line without its newline. The next
/// `serve` cuts it off, says so, and its first batch is a line of its own.
#[test]
fn serve_cuts_off_a_partial_last_line_before_appending() {
    let dir = scratch("torn");
    let out = dir.join("batches.jsonl");
    std::fs::write(&out, "{\"kept\":1}\n{\"id\":\"half a li").unwrap();
    let serve = Serve::start(&out, &[]);
    let (status, answer) = post_json(&serve.url, indented_deliveries()[0].as_bytes());
    assert_eq!(status, 200, "{answer}");
    let summary = serve.interrupt();
    assert!(
        summary.contains("ended in a partial line") && summary.contains("its last 16 bytes"),
        "{summary}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines = one_document_per_line(&text);
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], serde_json::json!({"kept": 1}));
    assert_eq!(lines[1]["id"], sync_id(0));
}

/// The sink's open waits while another connection holds the file's lock (as it waits, at 5 M
/// identities, for the 10 s of reading them): `serve` listens meanwhile, answers `/healthz`
/// and `/metrics`, and answers `/readyz` and deliveries 503 `not_ready`, until it is open.
#[test]
fn serve_listens_at_once_and_answers_503_not_ready_until_its_sink_is_open() {
    let dir = scratch("loading");
    let db = dir.join("records.db");
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder
        // No table of its own: the sink refuses a file that holds another application's.
        .execute_batch("BEGIN EXCLUSIVE;")
        .unwrap();
    let serve = Serve::spawn_as_given({
        let mut command = bin();
        command.args(["serve", "--secret", SECRET, "--addr", "127.0.0.1:0"]);
        command
            .arg("--sink")
            .arg(format!("sqlite:{}", db.display()));
        command
    });
    let base = serve.url.trim_end_matches("/webhooks/polytomic").to_owned();
    let body = indented_deliveries()[0].clone();
    assert_eq!(
        http_get(&format!("{base}/healthz")),
        (200, "ok\n".to_owned())
    );
    assert_eq!(http_get(&format!("{base}/metrics")).0, 200);
    for (status, answer) in [
        http_get(&format!("{base}/readyz")),
        post_json(&serve.url, body.as_bytes()),
    ] {
        let problem: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            (status, &problem["code"]),
            (503, &Value::from("not_ready")),
            "{answer}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("still opening its sink"),
            "{answer}"
        );
    }
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let serve = serve.ready();
    let (status, answer) = post_json(&serve.url, body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let summary = serve.interrupt();
    assert!(summary.contains("the sink is open"), "{summary}");
    assert!(summary.contains("refused 1: 503 not_ready"), "{summary}");
}

/// Numbers no `f64` holds: past `u64`, beyond an `f64`'s range of exact integers, more digits
/// than an `f64` keeps.
const EXACT_NUMBERS: [&str; 3] = [
    "123456789012345678901234567890",
    "18446744073709551616",
    "0.1000000000000000055511151231257827",
];

/// A receiver in this process, behind the library's layer, that keeps each record's fields
/// text as received.
fn fields_server() -> (String, Kept<String>) {
    use polytomic_webhook::prelude::*;

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    let config = PolytomicWebhookConfig::default().secret(Secret::new(SECRET).unwrap());
    let app = Router::new()
        .route(
            "/webhooks/polytomic",
            post(move |batch: SyncRecords| async move {
                let mut seen = keep.lock().unwrap();
                seen.extend(
                    batch
                        .iter()
                        .map(|record| record.fields().as_str().to_owned()),
                );
                Ack::from(&batch)
            }),
        )
        .layer(PolytomicWebhookLayer::new(config).unwrap());
    (spawn_server(app), seen)
}

#[test]
fn send_sends_every_number_as_written_and_refuses_a_name_given_twice() {
    let (base, seen) = fields_server();
    let url = format!("{base}webhooks/polytomic");
    let dir = scratch("exact");
    let lines: Vec<String> = EXACT_NUMBERS
        .iter()
        .map(|number| format!(r#"{{"id": {number}, "n": [{number}]}}"#))
        .collect();
    let file = dir.join("exact.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let output = send(&url, &file, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(*seen.lock().unwrap(), lines);

    let twice = dir.join("twice.jsonl");
    std::fs::write(&twice, "{\"id\":1}\n{\"email\":\"a\",\"email\":\"b\"}\n").unwrap();
    let output = send(&url, &twice, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("twice.jsonl:2: ") && message.contains("given twice: email"),
        "{message}"
    );
    assert!(message.contains("nothing was sent"), "{message}");
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[test]
fn send_event_sends_the_payload_numbers_as_written_and_refuses_a_name_given_twice() {
    let (base, seen) = events_server();
    let url = format!("{base}webhooks/polytomic/events");
    let dir = scratch("exact-event");
    let payload = dir.join("payload.json");
    let text = format!(
        "{{\n  \"big\": {},\n  \"u\": {},\n  \"f\": {}\n}}",
        EXACT_NUMBERS[0], EXACT_NUMBERS[1], EXACT_NUMBERS[2]
    );
    std::fs::write(&payload, &text).unwrap();
    let send = |id: &str, extra: &[&str]| {
        bin()
            .args(["send-event", "--type", "sync.completed", "--url", &url])
            .args(["--secret", SECRET, "--id", id, "--payload-file"])
            .arg(&payload)
            .args(extra)
            .output()
            .unwrap()
    };
    for (id, extra) in [
        ("evt-exact-1", &[][..]),
        ("evt-exact-2", &["--total-records", "7"][..]),
    ] {
        let output = send(id, extra);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let [n0, n1, n2] = EXACT_NUMBERS;
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, payload)| payload.clone())
            .collect::<Vec<_>>(),
        [
            text.clone(),
            format!(r#"{{"big":{n0},"f":{n2},"total_records":7,"u":{n1}}}"#),
        ]
    );

    std::fs::write(&payload, r#"{"email":"a","email":"b"}"#).unwrap();
    let output = send("evt-exact-3", &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("payload.json: the member name is given twice: email; nothing was sent"),
        "{message}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

/// A delivery whose one record carries `marker` and enough padding that its line nearly fills
/// a pipe's page (PIPE_BUF, 4096 bytes): a pipe takes it whole or not at all, and a few dozen
/// fill a pipe.
fn padded_delivery(marker: usize) -> String {
    serde_json::json!({"event": "sync.records", "object": {
    "id": sync_id(0), "name": "Stalled", "records": [
        {"hash": format!("h{marker}"), "fields": {"marker": marker, "pad": "x".repeat(3000)}}
    ]}})
    .to_string()
}

/// `f`'s result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let started = std::time::Instant::now();
    let result = f();
    (result, started.elapsed())
}

/// The problem `code` of an answer's body.
fn problem_code(body: &str) -> Value {
    serde_json::from_str::<Value>(body).map_or(Value::Null, |problem| problem["code"].clone())
}

/// The markers of the lines `text` holds, in order.
fn markers_of(text: &str) -> Vec<usize> {
    one_document_per_line(text)
        .iter()
        .map(|batch| {
            usize::try_from(batch["records"][0]["fields"]["marker"].as_u64().unwrap()).unwrap()
        })
        .collect()
}

/// A FIFO at `path`, made with mkfifo(1).
#[cfg(unix)]
fn mkfifo(path: &std::path::Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// The output wait the stall tests give `serve`, short to keep them fast.
const OUTPUT_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);
/// How much later than its wait a refused delivery may be answered, and how long an
/// operations route may take: generous on a loaded CI machine.
const MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// `serve --out FIFO` listens before anyone reads the FIFO: `/readyz` answers 503 and a
/// delivery 503 `batch_not_stored` after the output wait (never written, even once a reader
/// comes), then, with a reader, 200 and its line.
#[cfg(unix)]
#[test]
fn serve_out_fifo_listens_at_once_and_is_ready_once_a_reader_opens_it() {
    let dir = scratch("fifo");
    let fifo = dir.join("batches.fifo");
    mkfifo(&fifo);
    let wait = OUTPUT_WAIT.as_millis().to_string();
    let serve = Serve::start(&fifo, &["--output-wait-ms", &wait]);
    let base = serve.url.trim_end_matches("/webhooks/polytomic").to_owned();
    let (status, body) = http_get(&format!("{base}/readyz"));
    assert_eq!(
        (status, problem_code(&body)),
        (503, Value::from("not_ready")),
        "{body}"
    );
    let ((status, body), took) = timed(|| post_json(&serve.url, padded_delivery(0).as_bytes()));
    assert_eq!(
        (status, problem_code(&body)),
        (503, Value::from("batch_not_stored")),
        "{body}"
    );
    assert!(took < OUTPUT_WAIT + MARGIN, "answered after {took:?}");

    let reader = std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap());
    let serve = serve.ready();
    let (status, body) = post_json(&serve.url, padded_delivery(1).as_bytes());
    assert_eq!(status, 200, "{body}");
    let summary = serve.interrupt();
    assert!(
        summary.contains("is a FIFO: waiting for a reader"),
        "{summary}"
    );
    assert_eq!(markers_of(&reader.join().unwrap()), [1]);
}

/// A reader of `serve --out` that stops reading: once the pipe is full, each delivery is
/// answered 503 `batch_not_stored` within the output wait, while `/healthz`, `/metrics` and
/// `/readyz` (503) answer within a second; once it reads again, deliveries are 200 again and
/// the output holds exactly the acknowledged lines.
#[cfg(unix)]
#[test]
fn serve_with_a_stalled_out_reader_answers_503_in_time_and_keeps_serving() {
    let dir = scratch("stalled");
    let fifo = dir.join("batches.fifo");
    mkfifo(&fifo);
    let wait = OUTPUT_WAIT.as_millis().to_string();
    let serve = Serve::start(&fifo, &["--output-wait-ms", &wait]);
    let base = serve.url.trim_end_matches("/webhooks/polytomic").to_owned();
    // Opened, never read until the end.
    let (opened, open) = std::sync::mpsc::channel();
    let (resume, resumed) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::open(fifo).unwrap();
        opened.send(()).unwrap();
        resumed.recv().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    });
    open.recv().unwrap();
    let serve = serve.ready();

    let mut acknowledged = Vec::new();
    let took = loop {
        let marker = acknowledged.len();
        assert!(marker < 10_000, "the pipe never filled");
        let ((status, body), took) =
            timed(|| post_json(&serve.url, padded_delivery(marker).as_bytes()));
        if status == 200 {
            acknowledged.push(marker);
            continue;
        }
        assert_eq!(
            (status, problem_code(&body)),
            (503, Value::from("batch_not_stored")),
            "{body}"
        );
        break took;
    };
    assert!(
        took < OUTPUT_WAIT + MARGIN,
        "the first refusal took {took:?}"
    );

    // Stalled: a delivery every 100 ms, each refused in time, while the operations routes
    // answer within a second.
    let senders: Vec<_> = (0..10)
        .map(|k| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let url = serve.url.clone();
            std::thread::spawn(move || {
                timed(|| post_json(&url, padded_delivery(20_000 + k).as_bytes()))
            })
        })
        .collect();
    let mut slowest = std::time::Duration::ZERO;
    for (path, expected) in [("/healthz", 200), ("/metrics", 200), ("/readyz", 503)] {
        let ((status, body), took) = timed(|| http_get(&format!("{base}{path}")));
        assert_eq!(status, expected, "{path}: {body}");
        assert!(took < MARGIN, "{path} took {took:?}");
        slowest = slowest.max(took);
    }
    let mut refusals = Vec::new();
    for sender in senders {
        let ((status, body), took) = sender.join().unwrap();
        refusals.push(took);
        assert_eq!(
            (status, problem_code(&body)),
            (503, Value::from("batch_not_stored")),
            "{body}"
        );
        assert!(took < OUTPUT_WAIT + MARGIN, "a refusal took {took:?}");
    }

    // Figures for the README, not assertions.
    eprintln!(
        "stalled: {} lines fitted; operations routes answered within {slowest:?}; refusals \
         took {:?}..{:?} (wait {OUTPUT_WAIT:?})",
        acknowledged.len(),
        refusals.iter().min().unwrap(),
        refusals.iter().max().unwrap(),
    );
    resume.send(()).unwrap();
    let serve = serve.ready();
    for marker in 30_000..30_010 {
        let ((status, body), took) =
            timed(|| post_json(&serve.url, padded_delivery(marker).as_bytes()));
        assert_eq!(status, 200, "{body}");
        assert!(took < MARGIN, "a delivery took {took:?}");
        acknowledged.push(marker);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let summary = serve.interrupt();
    assert!(
        summary.contains("refused 11: 503 batch_not_stored"),
        "{summary}"
    );
    assert_eq!(markers_of(&reader.join().unwrap()), acknowledged);
}

/// `serve --events-secret` receives the organisation Events webhook where `send-event` posts
/// by default. `serve` listens on a free port here, so the test changes only the port of
/// send-event's default URL, and checks that default against serve's own default address.
#[test]
fn serve_with_an_events_secret_accepts_send_event_at_its_default_url() {
    let help = |command: &str| {
        let output = bin().args([command, "--help"]).output().unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let default_url = "http://127.0.0.1:8080/webhooks/polytomic/events";
    assert!(
        help("send-event").contains(default_url),
        "{}",
        help("send-event")
    );
    assert!(
        help("serve").contains("[default: 127.0.0.1:8080]"),
        "{}",
        help("serve")
    );

    let dir = scratch("serve-events");
    let out = dir.join("lines.jsonl");
    let serve = Serve::start(&out, &["--events-secret", "whsec-serve"]);
    let addr = serve
        .url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/webhooks/polytomic"))
        .unwrap()
        .to_owned();
    let url = default_url.replace("127.0.0.1:8080", &addr);
    let send = |secret: &str| {
        bin()
            .args([
                "send-event",
                "--type",
                "sync.completed",
                "--id",
                "evt-serve-1",
            ])
            .args(["--url", &url, "--secret", secret])
            .output()
            .unwrap()
    };
    let first = send("whsec-serve");
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("accepted: HTTP 200"),
        "{}",
        stderr(&first)
    );
    let again = send("whsec-serve");
    assert!(stderr(&again).contains("a duplicate"), "{}", stderr(&again));
    let wrong = send("not-the-secret");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("invalid_signature"),
        "{}",
        stderr(&wrong)
    );
    let log = serve.interrupt();
    assert!(
        log.contains(&format!(
            "organisation events on http://{addr}/webhooks/polytomic/events"
        )),
        "{log}"
    );
    // The one accepted event, as one line where the batches go.
    let lines = one_document_per_line(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event_id"], "evt-serve-1");
    assert_eq!(lines[0]["type"], "sync.completed");
}

/// With `--sink`, batches go to the sink and events to standard output, through a line writer
/// of their own (a reader that stops reading makes events wait their bounded time, as lines).
#[test]
fn serve_with_a_sink_writes_events_to_standard_output() {
    let dir = scratch("serve-events-sink");
    let stdout_path = dir.join("stdout.jsonl");
    let mut command = bin();
    command
        .args(["serve", "--secret", SECRET, "--events-secret", "whsec-sink"])
        .arg("--sink")
        .arg(format!("sqlite:{}", dir.join("records.db").display()))
        .args(["--addr", "127.0.0.1:0"]);
    let serve = Serve::spawn_with_stdout(
        command,
        Stdio::from(std::fs::File::create(&stdout_path).unwrap()),
    );
    let url = serve
        .url
        .replace("/webhooks/polytomic", "/webhooks/polytomic/events");
    let sent = bin()
        .args([
            "send-event",
            "--type",
            "sync.completed",
            "--id",
            "evt-sink-1",
        ])
        .args(["--url", &url, "--secret", "whsec-sink"])
        .output()
        .unwrap();
    assert!(
        stderr(&sent).contains("accepted: HTTP 200"),
        "{}",
        stderr(&sent)
    );
    serve.interrupt();
    let lines = one_document_per_line(&std::fs::read_to_string(&stdout_path).unwrap());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event_id"], "evt-sink-1");
}

/// `--addr` explains a host name and a missing port as the receiver example explains its
/// variable, with the address to use instead.
#[test]
fn serve_explains_an_addr_that_is_a_host_name_or_lacks_a_port() {
    for (addr, problem, fix) in [
        (
            "localhost:8080",
            "a host name is not looked up, only an IP address is accepted",
            "Fix: use 127.0.0.1:8080",
        ),
        ("10.0.0.5", "the port is missing", "Fix: use 10.0.0.5:8080"),
        (
            ":9000",
            "the IP address is missing (0.0.0.0 listens on every interface)",
            "Fix: use 127.0.0.1:9000",
        ),
    ] {
        let output = bin()
            .args(["serve", "--secret", SECRET, "--addr", addr])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{addr}");
        let text = stderr(&output);
        assert!(
            text.contains(problem) && text.contains(fix),
            "{addr}: {text}"
        );
        assert!(text.contains("such as 127.0.0.1:8080"), "{addr}: {text}");
    }
}
