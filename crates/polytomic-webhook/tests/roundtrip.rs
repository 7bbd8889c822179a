//! Property: any batch, serialized and sent through the whole stack (auth, any body form,
//! decompression, extraction), reaches the handler equal to itself.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Extension;
use axum::routing::post;
use http::StatusCode;
use polytomic_webhook::auth::FixedClock;
use polytomic_webhook::prelude::*;
use polytomic_webhook::testing::{BodyForm, Delivery};
use polytomic_webhook_event::strategy::batch;
use proptest::prelude::*;
use tower::ServiceExt;

const SECRET: &str = "round-trip-secret";
const NOW: &str = "2026-01-02T03:04:05Z";

type Received = Arc<Mutex<Vec<SyncRecords<Fields>>>>;

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
                |Extension(received): Extension<Received>, batch: SyncRecords<Fields>| async move {
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
        form in prop_oneof![Just(BodyForm::Gzip), Just(BodyForm::GzipWithoutHeader), Just(BodyForm::Identity)],
    ) {
        let request = Delivery::from_batch(&batch)
            .secret(SECRET)
            .timestamp(NOW.parse().unwrap())
            .form(form)
            .build();
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
