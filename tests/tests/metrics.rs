//! The receiver example's `/metrics` over TCP after deliveries of every outcome. Alone in its
//! binary: the recorder it installs is the process's, and other tests' deliveries would count.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use http::StatusCode;
use http::header::CONTENT_TYPE;
use polytomic_webhook::metrics::install_prometheus_recorder;
use polytomic_webhook::testing::prometheus_value;
use serde_json::json;
use support::*;

#[tokio::test]
async fn metrics_count_every_outcome_with_its_code_and_time_every_delivery() {
    let handle = install_prometheus_recorder().unwrap();
    let addr = start_marked(&examples::Ops {
        metrics: Some(handle),
        ..examples::Ops::default()
    })
    .await;

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
                "polytomic_webhook_deliveries_total{{outcome=\"{outcome}\",code=\"{code}\"}}"
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
            "polytomic_webhook_delivery_duration_seconds_count{{outcome=\"{outcome}\"}}"
        ))
        .unwrap();
    }
    assert_eq!(timed, deliveries as f64, "{text}");
    // Two records, then one: only the acknowledged batches.
    assert_eq!(
        value(r#"polytomic_webhook_records_total{result="accepted"}"#.to_owned()),
        Some(3.0)
    );
    let compressed = value(r#"polytomic_webhook_body_bytes_total{stage="compressed"}"#.to_owned());
    let decompressed =
        value(r#"polytomic_webhook_body_bytes_total{stage="decompressed"}"#.to_owned());
    assert!(
        compressed.unwrap() > 0.0 && decompressed.unwrap() > compressed.unwrap(),
        "{text}"
    );
    assert_eq!(value("polytomic_webhook_in_flight".to_owned()), Some(0.0));
    // The descriptions are there for Prometheus's HELP.
    assert!(
        text.contains("# HELP polytomic_webhook_deliveries_total "),
        "{text}"
    );
    // No request's text ends up in a label: only the program's own codes.
    assert!(!text.contains("marker"), "{text}");
}
