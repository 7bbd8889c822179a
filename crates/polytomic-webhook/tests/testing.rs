//! The `testing` builder: its deliveries pass the whole stack in every body form, and each
//! hostile helper gets the rejection its docs promise.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Extension;
use axum::routing::post;
use chrono::{DateTime, Utc};
use http::StatusCode;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use http_body_util::{BodyExt, Full};
use polytomic_webhook::prelude::*;
use polytomic_webhook::testing::{BodyForm, Delivery, SAMPLE_SYNC_ID, record_hash};
use serde_json::json;
use tower::ServiceExt;

const SECRET: &str = "testing-helper-secret";

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Contact {
    id: u32,
    email: String,
}

type Received = Arc<Mutex<Vec<SyncRecords>>>;

fn app() -> (Router, Received) {
    let config = PolytomicWebhookConfig::default().secret(Secret::new(SECRET).unwrap());
    let received = Received::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |Extension(received): Extension<Received>, batch: SyncRecords| async move {
                    let ack = Ack::from(&batch);
                    received.lock().unwrap().push(batch);
                    ack
                },
            ),
        )
        .layer(PolytomicWebhookLayer::new(config).unwrap())
        .layer(Extension(received.clone()));
    (app, received)
}

fn valid() -> Delivery {
    Delivery::new()
        .uri("/hook")
        .secret(SECRET)
        .sync("0b7c5a3e-6f7d-4a43-8f0e-1f8a2c9d4e51", "Contacts")
        .records([
            Contact {
                id: 1,
                email: "a@example.com".into(),
            },
            Contact {
                id: 2,
                email: "b@example.com".into(),
            },
        ])
        .record_json(json!({"id": 3, "email": "c@example.com"}))
        .metadata("team", "growth")
}

async fn problem(response: axum::response::Response) -> serde_json::Value {
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn deliveries_pass_the_stack_in_every_body_form() {
    for form in [
        BodyForm::Gzip,
        BodyForm::GzipWithoutHeader,
        BodyForm::Identity,
    ] {
        let (app, received) = app();
        let request = valid().form(form).build();
        assert_eq!(
            request.headers().get(CONTENT_ENCODING).is_some(),
            form == BodyForm::Gzip,
            "{form:?}"
        );
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{form:?}");
        let received = received.lock().unwrap();
        let batch = &received[0];
        assert_eq!(batch.id().as_str(), "0b7c5a3e-6f7d-4a43-8f0e-1f8a2c9d4e51");
        assert_eq!(batch.name(), "Contacts");
        assert_eq!(batch.metadata().get("team").unwrap().get(), r#""growth""#);
        let emails: Vec<_> = batch
            .iter()
            .map(|r| r.fields().get("email").unwrap().get())
            .collect();
        assert_eq!(
            emails,
            [
                r#""a@example.com""#,
                r#""b@example.com""#,
                r#""c@example.com""#
            ]
        );
        let first = &batch.records()[0];
        assert_eq!(
            first.hash().as_str(),
            record_hash(&json!({"email": "a@example.com", "id": 1}))
        );
    }
}

#[tokio::test]
async fn the_request_carries_polytomics_headers_and_any_bytes_body() {
    let at: DateTime<Utc> = "2021-06-01T22:55:36Z".parse().unwrap();
    let request = valid().timestamp(at).build_with::<Full<bytes::Bytes>>();
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri(), "/hook");
    let headers = request.headers();
    assert_eq!(headers[AUTHORIZATION], format!("Bearer {SECRET}"));
    assert_eq!(
        headers["polytomic-signature-timestamp"],
        "2021-06-01T22:55:36Z"
    );
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert_eq!(headers[CONTENT_ENCODING], "gzip");
    assert!(
        headers[USER_AGENT]
            .to_str()
            .unwrap()
            .starts_with("polytomic-webhook-testing/")
    );
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut json)
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["event"], "sync.records");
    assert_eq!(json["object"]["records"][2]["fields"]["id"], 3);
}

#[tokio::test]
async fn the_default_timestamp_is_now() {
    let before = Utc::now() - chrono::TimeDelta::seconds(1);
    let request = Delivery::new().build();
    let stamp: DateTime<Utc> = request.headers()["polytomic-signature-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(stamp >= before && stamp <= Utc::now(), "{stamp}");
}

#[tokio::test]
async fn hostile_helpers_get_their_documented_rejections() {
    for (delivery, status, code) in [
        (
            valid().wrong_secret(),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            valid().stale_timestamp(),
            StatusCode::UNAUTHORIZED,
            "timestamp_too_old",
        ),
        (
            valid().bomb(64 * 1024 * 1024),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            valid().malformed_json(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            valid().without_timestamp(),
            StatusCode::UNAUTHORIZED,
            "missing_timestamp",
        ),
    ] {
        let (app, received) = app();
        let response = app.oneshot(delivery.build()).await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        let problem = problem(response).await;
        assert_eq!(problem["code"], code);
        if code == "body_too_large" {
            assert_eq!(problem["limit"], "ratio");
        }
        assert!(received.lock().unwrap().is_empty(), "{code}");
    }
}

#[tokio::test]
async fn a_bomb_is_small_on_the_wire() {
    let (_, body) = Delivery::new().bomb(1 << 30).encode();
    assert!(body.len() < 2 << 20, "{} bytes", body.len());
}

#[tokio::test]
async fn an_unknown_event_is_acknowledged_without_the_handler() {
    let (app, received) = app();
    let response = app
        .oneshot(valid().event("sync.future_thing").build())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(received.lock().unwrap().is_empty());
}

#[test]
fn record_hashes_are_16_hex_digits_and_depend_only_on_the_fields() {
    let a = record_hash(&json!({"x": {"b": 1, "a": [1, {"d": 2, "c": 3}]}, "y": null}));
    let b = record_hash(&json!({"y": null, "x": {"a": [1, {"c": 3, "d": 2}], "b": 1}}));
    assert_eq!(a, b);
    assert_eq!(a.len(), 16);
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_ne!(
        a,
        record_hash(&json!({"x": {"b": 2, "a": [1, {"d": 2, "c": 3}]}, "y": null}))
    );
}

#[test]
fn explicit_hashes_and_batches_are_kept() {
    let batch = SyncRecords::new(
        SAMPLE_SYNC_ID.parse().unwrap(),
        "Forwarded",
        vec![Record::new(
            polytomic_webhook::event::RecordHash::new("b7421c6c57bd49f7"),
            Contact {
                id: 7,
                email: "n@example.com".into(),
            },
        )],
    );
    let (_, body) = Delivery::from_batch(&batch)
        .form(BodyForm::Identity)
        .encode();
    let parsed: SyncRecords<Contact> =
        polytomic_webhook::event::parse_sync_records(&body, &EventConfig::default()).unwrap();
    assert_eq!(parsed, batch);
}
