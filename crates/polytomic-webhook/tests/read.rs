//! `event::read` behind the composed layer, in a plain tower `service_fn`: the same answers and
//! the same log line as the extractor in an axum router.

#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::convert::Infallible;

use axum::response::{IntoResponse, Response};
use http::Request;
use polytomic_webhook::event::{self, Fields};
use polytomic_webhook::prelude::*;
use polytomic_webhook::testing::{Delivery, capture_logs};
use polytomic_webhook::{DeliveryBody, PolytomicWebhook};
use tower::{Layer, ServiceExt, service_fn};

const SECRET: &str = "read-api-secret";
const SYNC_ID: &str = "0b7e6a54-2f4c-4c3e-9d1a-5e8f00c0ffee";

async fn handle(request: Request<DeliveryBody<axum::body::Body>>) -> Result<Response, Infallible> {
    Ok(match event::read::<Fields, _>(request).await {
        Ok(batch) => Ack::from(&batch).into_response(),
        Err(rejection) => rejection.into_response(),
    })
}

async fn send(request: Request<axum::body::Body>) -> (u16, String) {
    let layer = PolytomicWebhookLayer::new(
        PolytomicWebhookConfig::default().secret(Secret::new(SECRET).unwrap()),
    )
    .unwrap();
    // Named with the same default clock as its layer's.
    let service: PolytomicWebhook<_> = layer.layer(service_fn(handle));
    let (status, logs) =
        capture_logs(async { service.oneshot(request).await.unwrap().status().as_u16() }).await;
    (status, logs)
}

#[tokio::test]
async fn the_layer_records_the_batch_that_read_accepted_on_its_span() {
    let delivery = Delivery::new()
        .secret(SECRET)
        .sync(SYNC_ID, "Contacts to CRM")
        .record_json(serde_json::json!({"email": "ada@example.com"}))
        .record_json(serde_json::json!({"email": "grace@example.com"}));
    let (status, logs) = send(delivery.build()).await;
    assert_eq!(status, 200, "{logs}");
    let line = logs
        .lines()
        .find(|line| line.contains("webhook delivery accepted"))
        .unwrap_or_else(|| panic!("no delivery line in {logs}"));
    for field in [
        format!("sync_id=\"{SYNC_ID}\""),
        "sync_name=\"Contacts to CRM\"".to_owned(),
        "record_count=2".to_owned(),
    ] {
        assert!(line.contains(&field), "{field} missing from {line}");
    }
    assert!(
        !logs.contains("ada@example.com"),
        "record contents logged: {logs}"
    );
}

#[tokio::test]
async fn a_batch_read_refuses_carries_no_batch_fields() {
    let (status, logs) = send(Delivery::new().secret(SECRET).malformed_json().build()).await;
    assert_eq!(status, 400, "{logs}");
    assert!(logs.contains("webhook delivery rejected"), "{logs}");
    assert!(!logs.contains("sync_id="), "{logs}");
    assert!(!logs.contains("record_count="), "{logs}");
}
