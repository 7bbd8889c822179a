//! Property: any batch, serialized and sent through the whole stack (auth, any body form,
//! decompression, extraction), reaches the handler equal to itself.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Extension;
use axum::routing::post;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use http::{Request, StatusCode};
use polytomic_webhook::auth::FixedClock;
use polytomic_webhook::prelude::*;
use polytomic_webhook_event::strategy::batch;
use proptest::prelude::*;
use tower::ServiceExt;

const SECRET: &str = "round-trip-secret";
const NOW: &str = "2026-01-02T03:04:05Z";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Form {
    GzipDeclared,
    GzipSniffed,
    Identity,
}

type Received = Arc<Mutex<Vec<SyncRecords>>>;

fn app() -> (Router, Received) {
    let layer = PolytomicWebhookLayer::new(
        PolytomicWebhookConfig::default().secret(Secret::new(SECRET).unwrap()),
    )
    .unwrap()
    .clock(FixedClock(NOW.parse().unwrap()));
    let received = Received::default();
    let app = Router::new()
        .route(
            "/",
            post(
                |Extension(received): Extension<Received>, batch: SyncRecords| async move {
                    received.lock().unwrap().push(batch);
                },
            ),
        )
        .layer(layer)
        .layer(Extension(received.clone()));
    (app, received)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn batches_survive_the_whole_stack(
        batch in batch(),
        form in prop_oneof![Just(Form::GzipDeclared), Just(Form::GzipSniffed), Just(Form::Identity)],
    ) {
        let json = serde_json::to_vec(&PolytomicEvent::SyncRecords(batch.clone())).unwrap();
        let mut request = Request::post("/")
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, format!("Bearer {SECRET}"))
            .header("polytomic-signature-timestamp", NOW);
        let body = match form {
            Form::GzipDeclared => {
                request = request.header(CONTENT_ENCODING, "gzip");
                gzip(&json)
            }
            Form::GzipSniffed => gzip(&json),
            Form::Identity => json,
        };
        let request = request.body(axum::body::Body::from(body)).unwrap();
        let (app, received) = app();
        let status = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(app.oneshot(request))
            .unwrap()
            .status();
        prop_assert_eq!(status, StatusCode::OK);
        let received = received.lock().unwrap();
        prop_assert_eq!(received.len(), 1);
        prop_assert_eq!(&received[0], &batch);
    }
}
