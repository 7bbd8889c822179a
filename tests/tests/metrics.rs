//! The receiver example's `/metrics` over TCP: before any delivery, then after deliveries of
//! every outcome. Alone in its binary: the recorder it installs is the process's, and other
//! tests' deliveries would count.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use http::StatusCode;
use http::header::CONTENT_TYPE;
use polytomic_webhook::metrics::{
    BODY_BYTES_TOTAL, BUILD_INFO, DELIVERIES_TOTAL, DELIVERY_DURATION_SECONDS, IN_FLIGHT,
    RECORDS_TOTAL, SINK_RECORDS_TOTAL, install_prometheus_recorder,
};
use polytomic_webhook::testing::prometheus_value;
use serde_json::json;
use support::*;

/// The libraries' version: `[workspace.package]`'s (this test crate has its own).
fn workspace_version() -> &'static str {
    include_str!("../../Cargo.toml")
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap()
}

/// Every series an idle receiver must list, so that alerts have data before the first
/// delivery: the metrics module's table, each label set at zero.
fn idle_series() -> Vec<(String, f64)> {
    let mut series = vec![
        (
            format!(
                "polytomic_webhook_build_info{{version=\"{}\"}}",
                workspace_version()
            ),
            1.0,
        ),
        (
            r#"polytomic_webhook_records_total{result="accepted"}"#.to_owned(),
            0.0,
        ),
    ];
    for result in ["stored", "unchanged", "superseded"] {
        series.push((
            format!("polytomic_webhook_sink_records_total{{result=\"{result}\"}}"),
            0.0,
        ));
    }
    for (webhook, refusal) in [("batch", "invalid_token"), ("events", "invalid_signature")] {
        series.push((
            format!("polytomic_webhook_in_flight{{webhook=\"{webhook}\"}}"),
            0.0,
        ));
        for (outcome, code) in [
            ("accepted", "none"),
            ("ignored", "none"),
            ("refused", refusal),
            ("refused", "overloaded"),
            ("handler_error", "none"),
            ("panicked", "handler_panicked"),
        ] {
            series.push((
                format!(
                    "polytomic_webhook_deliveries_total{{webhook=\"{webhook}\",outcome=\"{outcome}\",code=\"{code}\"}}"
                ),
                0.0,
            ));
        }
        for outcome in [
            "accepted",
            "refused",
            "ignored",
            "handler_error",
            "panicked",
        ] {
            series.push((
                format!(
                    "polytomic_webhook_delivery_duration_seconds_count{{webhook=\"{webhook}\",outcome=\"{outcome}\"}}"
                ),
                0.0,
            ));
        }
        for stage in ["compressed", "decompressed"] {
            series.push((
                format!(
                    "polytomic_webhook_body_bytes_total{{webhook=\"{webhook}\",stage=\"{stage}\"}}"
                ),
                0.0,
            ));
        }
    }
    series
}

/// `promtool check metrics` on `text` (Debian's `prometheus` package): `None` when skipped.
fn promtool_check_metrics(text: &str) -> Option<String> {
    use std::io::Write;
    if !installed_or_skipped("promtool", "prometheus", "promtool check metrics") {
        return None;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool check metrics: {report}\n{text}"
    );
    Some(report)
}

#[tokio::test]
async fn metrics_count_every_outcome_with_its_code_and_time_every_delivery() {
    let handle = install_prometheus_recorder().unwrap();
    let addr = start_marked(&examples::Ops {
        metrics: Some(handle),
        ..examples::Ops::default()
    })
    .await;

    // Before any delivery: every documented series, at zero, in a text promtool accepts.
    let idle = get(addr, "/metrics").await;
    assert_eq!(idle.status, StatusCode::OK);
    let idle = std::str::from_utf8(&idle.body).unwrap().to_owned();
    for (series, value) in idle_series() {
        assert_eq!(
            prometheus_value(&idle, &series),
            Some(value),
            "{series} in\n{idle}"
        );
    }
    // Every metric the metrics module names, and every row of the metrics guide's table, is
    // there too (a histogram by its `_bucket` series).
    let guide = include_str!("../../crates/polytomic-webhook/docs/metrics.md");
    let table = guide.lines().filter_map(|line| {
        let name = line.strip_prefix("| `")?.split('`').next()?;
        name.starts_with("polytomic_webhook_").then_some(name)
    });
    let constants = [
        DELIVERIES_TOTAL,
        RECORDS_TOTAL,
        SINK_RECORDS_TOTAL,
        BODY_BYTES_TOTAL,
        DELIVERY_DURATION_SECONDS,
        IN_FLIGHT,
        BUILD_INFO,
    ];
    for name in constants.into_iter().chain(table) {
        let listed = |series: &str| idle.contains(&format!("\n{series}{{"));
        assert!(
            listed(name) || listed(&format!("{name}_bucket")),
            "{name} in\n{idle}"
        );
    }
    if let Some(report) = promtool_check_metrics(&idle) {
        assert_eq!(report, "", "promtool's lint on\n{idle}");
    }

    // (delivery, status, outcome, code)
    let plan = [
        (
            marked("a").record_json(json!({"marker": "a"})),
            StatusCode::OK,
            "accepted",
            "none",
        ),
        (marked("b"), StatusCode::OK, "accepted", "none"),
        (
            marked("c").wrong_secret(),
            StatusCode::UNAUTHORIZED,
            "refused",
            "invalid_token",
        ),
        (
            marked("d").stale_timestamp(),
            StatusCode::UNAUTHORIZED,
            "refused",
            "timestamp_too_old",
        ),
        (
            marked("e").bomb(4 << 20),
            StatusCode::PAYLOAD_TOO_LARGE,
            "refused",
            "body_too_large",
        ),
        (
            marked("f").malformed_json(),
            StatusCode::BAD_REQUEST,
            "refused",
            "invalid_json",
        ),
        (
            marked("g").raw_json(br#"{"event":"sync.records","object":{"id":"x"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
            "invalid_envelope",
        ),
        (
            marked("h").event("sync.future"),
            StatusCode::OK,
            "ignored",
            "none",
        ),
        (
            marked("fail"),
            StatusCode::SERVICE_UNAVAILABLE,
            "handler_error",
            "batch_not_stored",
        ),
        (
            marked("panic"),
            StatusCode::INTERNAL_SERVER_ERROR,
            "panicked",
            "handler_panicked",
        ),
    ];
    let deliveries = plan.len();
    let mut expected = std::collections::BTreeMap::<(&str, &str), f64>::new();
    for (delivery, status, outcome, code) in plan {
        let reply = send(addr, encoded(addr, delivery.encode())).await;
        assert_eq!(reply.status, status, "{outcome} {code}: {reply:?}");
        *expected.entry((outcome, code)).or_default() += 1.0;
    }

    let scrape = get(addr, "/metrics").await;
    assert_eq!(scrape.status, StatusCode::OK);
    assert!(
        scrape.headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{scrape:?}"
    );
    let text = std::str::from_utf8(&scrape.body).unwrap();
    let value = |series: String| prometheus_value(text, &series);
    for ((outcome, code), count) in &expected {
        assert_eq!(
            value(format!(
                "polytomic_webhook_deliveries_total{{webhook=\"batch\",outcome=\"{outcome}\",code=\"{code}\"}}"
            )),
            Some(*count),
            "{outcome} {code} in\n{text}"
        );
    }
    let mut timed = 0.0;
    for outcome in [
        "accepted",
        "refused",
        "ignored",
        "handler_error",
        "panicked",
    ] {
        timed += value(format!(
            "polytomic_webhook_delivery_duration_seconds_count{{webhook=\"batch\",outcome=\"{outcome}\"}}"
        ))
        .unwrap();
    }
    assert_eq!(timed, deliveries as f64, "{text}");
    // Two records, then one: only the acknowledged batches.
    assert_eq!(
        value(r#"polytomic_webhook_records_total{result="accepted"}"#.to_owned()),
        Some(3.0)
    );
    let compressed = value(
        r#"polytomic_webhook_body_bytes_total{webhook="batch",stage="compressed"}"#.to_owned(),
    );
    let decompressed = value(
        r#"polytomic_webhook_body_bytes_total{webhook="batch",stage="decompressed"}"#.to_owned(),
    );
    assert!(
        compressed.unwrap() > 0.0 && decompressed.unwrap() > compressed.unwrap(),
        "{text}"
    );
    assert_eq!(
        value(r#"polytomic_webhook_in_flight{webhook="batch"}"#.to_owned()),
        Some(0.0)
    );
    // No Events delivery was sent: the events series are still at zero.
    assert_eq!(
        value(r#"polytomic_webhook_deliveries_total{webhook="events",outcome="accepted",code="none"}"#.to_owned()),
        Some(0.0)
    );
    // The descriptions are there for Prometheus's HELP.
    assert!(
        text.contains("# HELP polytomic_webhook_deliveries_total "),
        "{text}"
    );
    // No request's text ends up in a label: only the program's own codes.
    assert!(!text.contains("marker"), "{text}");
}
