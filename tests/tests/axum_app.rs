//! The README's axum program: the same text as `examples/axum_app.rs`, and that example,
//! started as a child process, serves, accepts a delivery and logs one line for it.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use polytomic_webhook::testing::Delivery;
use support::*;

const README: &str = include_str!("../../README.md");
const PROGRAM: &str = include_str!("../../examples/axum_app.rs");

/// The fenced block of `README` that follows `opening` (e.g. "```rust,no_run\n").
fn readme_block(section: &str, opening: &str) -> &'static str {
    let section = README
        .split_once(section)
        .unwrap_or_else(|| panic!("no {section:?} in the README"))
        .1;
    section
        .split_once(opening)
        .unwrap_or_else(|| panic!("no {opening:?} block after {section:?}"))
        .1
        .split_once("```\n")
        .unwrap()
        .0
}

#[test]
fn the_readmes_axum_program_is_the_example_file() {
    let block = readme_block("## Use it with axum", "```rust,no_run\n");
    assert_eq!(
        block, PROGRAM,
        "the README's axum program and examples/axum_app.rs differ: copy one to the other"
    );
}

/// The dependencies the README lists are the ones the program uses, with the features it needs.
#[test]
fn the_readmes_dependency_block_fits_the_program() {
    let block = readme_block("## Use it with axum", "```toml\n");
    let repository = include_str!("../../Cargo.toml")
        .lines()
        .find_map(|line| line.strip_prefix("repository = "))
        .unwrap();
    for line in [
        &format!("polytomic-webhook = {{ git = {repository} }}")[..],
        "# or, from a checkout: polytomic-webhook = { path = ",
        "axum = \"0.8\"",
        "tokio = { version = \"1\", features = [\"macros\", \"rt-multi-thread\", \"net\"] }",
        "tracing-subscriber = \"0.3\"",
    ] {
        assert!(block.contains(line), "{line} missing from {block}");
    }
    for used in [
        "axum::",
        "tokio::",
        "tracing_subscriber::",
        "polytomic_webhook::",
    ] {
        assert!(PROGRAM.contains(used), "{used}");
    }
}

/// Kills the child if the test fails before it is stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_readmes_axum_program_serves_accepts_and_logs_one_line() {
    let mut child = Running(
        Command::new(example_binary("axum_app"))
            .env("POLYTOMIC_WEBHOOK_SECRET", SECRET)
            .env("POLYTOMIC_WEBHOOK_ADDR", "127.0.0.1:0")
            // Plain text: colour codes would split the fields this test looks for.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.strip_suffix(examples::WEBHOOK_PATH))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();

    let delivery = Delivery::new()
        .secret(SECRET)
        .record_json(serde_json::json!({"email": "ada@example.com"}));
    send(addr, encoded(addr, delivery.encode()))
        .await
        .assert_accepted(1);
    // Only the webhook route is behind `route_layer`: another path is axum's 404, unchecked.
    let elsewhere = http::Request::post(format!("http://{addr}/elsewhere"))
        .body(full(""))
        .unwrap();
    assert_eq!(
        send(addr, elsewhere).await.status,
        http::StatusCode::NOT_FOUND
    );

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut logs = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 1, "{logs}");
    for part in [
        " INFO polytomic_webhook.delivery{method=POST path=/webhooks/polytomic ",
        "record_count=1 ",
        "status=200 outcome=\"accepted\"}",
        ": webhook delivery accepted",
    ] {
        assert!(lines[0].contains(part), "{part} missing from {logs}");
    }
    assert!(!logs.contains("ada@example.com"), "{logs}");
}
