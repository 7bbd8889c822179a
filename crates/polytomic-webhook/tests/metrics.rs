//! The layer's metrics, read back from a Prometheus recorder installed for the test's thread.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::future::Future;
use std::task::Poll;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;
use metrics_exporter_prometheus::PrometheusRecorder;
use polytomic_webhook::handler_panicked;
use polytomic_webhook::metrics::prometheus_recorder;
use polytomic_webhook::prelude::*;
use polytomic_webhook::testing::{Delivery, prometheus_value};
use serde_json::json;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;

const SECRET: &str = "metrics-test-secret";
const PATH: &str = "/webhooks/polytomic";

/// Acknowledges a batch, unless its first record says otherwise: `fail` is answered as a
/// batch that could not be stored, `panic` panics, `hang` never answers.
async fn receive(batch: SyncRecords) -> Response {
    let marker = batch.records()[0]
        .fields()
        .get("marker")
        .map(|raw| raw.get().to_owned());
    match marker.as_deref() {
        Some(r#""fail""#) => NotStored.into_response(),
        Some(r#""panic""#) => panic!("the test handler panics"),
        Some(r#""hang""#) => std::future::pending().await,
        _ => Ack::from(&batch).into_response(),
    }
}

fn app() -> Router {
    let config = PolytomicWebhookConfig::default().secret(Secret::new(SECRET).unwrap());
    Router::new()
        .route(PATH, post(receive))
        .route_layer(CatchPanicLayer::custom(handler_panicked))
        .route_layer(PolytomicWebhookLayer::new(config).unwrap())
}

fn delivery(marker: &str) -> Delivery {
    Delivery::new()
        .uri(PATH)
        .secret(SECRET)
        .record_json(json!({"marker": marker}))
}

async fn send(delivery: Delivery) -> StatusCode {
    app().oneshot(delivery.build()).await.unwrap().status()
}

fn value(recorder: &PrometheusRecorder, series: &str) -> Option<f64> {
    prometheus_value(&recorder.handle().render(), series)
}

#[tokio::test]
async fn each_outcome_is_counted_with_its_code_and_timed() {
    let recorder = prometheus_recorder();
    // The test runtime has one thread, so every poll sees this recorder.
    let _installed = metrics::set_default_local_recorder(&recorder);

    let two = delivery("a").record_json(json!({"marker": "a"}));
    assert_eq!(send(two).await, StatusCode::OK);
    assert_eq!(send(delivery("b")).await, StatusCode::OK);
    assert_eq!(
        send(delivery("c").wrong_secret()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(delivery("d").bomb(64 << 20)).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        send(delivery("e").malformed_json()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(delivery("f").event("sync.future")).await,
        StatusCode::OK
    );
    assert_eq!(
        send(delivery("fail")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(delivery("panic")).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let deliveries = |labels: &str| {
        value(
            &recorder,
            &format!("polytomic_webhook_deliveries_total{{webhook=\"batch\",{labels}}}"),
        )
    };
    for (labels, count) in [
        (r#"outcome="accepted",code="none""#, 2.0),
        (r#"outcome="refused",code="invalid_token""#, 1.0),
        (r#"outcome="refused",code="body_too_large""#, 1.0),
        (r#"outcome="refused",code="invalid_json""#, 1.0),
        (r#"outcome="ignored",code="none""#, 1.0),
        (r#"outcome="handler_error",code="batch_not_stored""#, 1.0),
        (r#"outcome="panicked",code="handler_panicked""#, 1.0),
    ] {
        assert_eq!(deliveries(labels), Some(count), "{labels}");
    }
    // Only acknowledged batches count their records: two, then one.
    assert_eq!(
        value(
            &recorder,
            r#"polytomic_webhook_records_total{result="accepted"}"#
        ),
        Some(3.0)
    );
    let timed = |outcome: &str| {
        value(
            &recorder,
            &format!(
                "polytomic_webhook_delivery_duration_seconds_count{{webhook=\"batch\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    for (outcome, count) in [
        ("accepted", 2.0),
        ("refused", 3.0),
        ("ignored", 1.0),
        ("handler_error", 1.0),
        ("panicked", 1.0),
    ] {
        assert_eq!(timed(outcome), Some(count), "{outcome}");
    }
    assert_eq!(
        value(&recorder, r#"polytomic_webhook_in_flight{webhook="batch"}"#),
        Some(0.0)
    );
}

#[tokio::test]
async fn body_bytes_are_counted_as_received_and_as_decoded() {
    let recorder = prometheus_recorder();
    let _installed = metrics::set_default_local_recorder(&recorder);
    let json = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7","name":"n","records":[{"hash":"h","fields":{"marker":"x"}}],"metadata":{}}}"#;
    let (_, gzipped) = delivery("x").raw_json(json).encode();
    assert_eq!(send(delivery("x").raw_json(json)).await, StatusCode::OK);

    let bytes = |stage: &str| {
        value(
            &recorder,
            &format!("polytomic_webhook_body_bytes_total{{webhook=\"batch\",stage=\"{stage}\"}}"),
        )
    };
    assert_eq!(bytes("compressed"), Some(gzipped.len() as f64));
    assert_eq!(bytes("decompressed"), Some(json.len() as f64));
}

#[tokio::test]
async fn a_delivery_dropped_before_its_answer_leaves_the_in_flight_gauge() {
    let recorder = prometheus_recorder();
    let _installed = metrics::set_default_local_recorder(&recorder);
    let mut answer = Box::pin(app().oneshot(delivery("hang").build()));
    // Polled until the handler waits forever: the delivery is in flight.
    for _ in 0..10 {
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx).is_ready())).await;
        assert!(!polled, "the hanging handler answered");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        value(&recorder, r#"polytomic_webhook_in_flight{webhook="batch"}"#),
        Some(1.0)
    );
    // The client went away: hyper drops the future.
    drop(answer);
    assert_eq!(
        value(&recorder, r#"polytomic_webhook_in_flight{webhook="batch"}"#),
        Some(0.0)
    );
}

/// Organisation events land in series of their own, and a server-wide bound inside the Events
/// layer (where the receiver puts it) is counted once, by that layer.
#[tokio::test]
async fn events_are_labelled_apart_from_batches_and_counted_once() {
    use std::time::Duration;

    use polytomic_webhook::limit::{InFlightLimitLayer, ServerLimits};
    use polytomic_webhook::testing::EventDelivery;

    const EVENTS: &str = "/webhooks/polytomic/events";
    const EVENTS_SECRET: &str = "metrics-events-secret";
    let recorder = prometheus_recorder();
    let _installed = metrics::set_default_local_recorder(&recorder);
    // One place, and no wait for it: a second event while the first hangs is refused.
    let limits = ServerLimits::default()
        .max_in_flight(1)
        .queue_wait(Duration::ZERO);
    let secrets = SigningSecrets::new(EVENTS_SECRET).unwrap();
    let events = Router::new()
        .route(
            EVENTS,
            post(|event: PolytomicOrgEvent| async move {
                if event.id() == "hang" {
                    std::future::pending::<()>().await;
                }
                "ok"
            }),
        )
        .route_layer(InFlightLimitLayer::new(&limits))
        .route_layer(
            PolytomicOrgEventsLayer::new(PolytomicOrgEventsConfig::default().secrets(secrets))
                .unwrap(),
        );
    let event = |id: &str| {
        EventDelivery::new("sync.completed")
            .uri(EVENTS)
            .id(id)
            .secret(EVENTS_SECRET)
    };
    let send = |delivery: EventDelivery| events.clone().oneshot(delivery.build());
    assert_eq!(send(event("e1")).await.unwrap().status(), StatusCode::OK);
    let forged = event("e2").secret("someone-else");
    assert_eq!(
        send(forged).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let mut hanging = Box::pin(send(event("hang")));
    for _ in 0..10 {
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(hanging.as_mut().poll(cx).is_ready())).await;
        assert!(!polled, "the hanging handler answered");
        tokio::task::yield_now().await;
    }
    let refused = send(event("e3")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        value(
            &recorder,
            r#"polytomic_webhook_in_flight{webhook="events"}"#
        ),
        Some(1.0)
    );
    drop(hanging);

    let deliveries = |webhook: &str, labels: &str| {
        value(
            &recorder,
            &format!("polytomic_webhook_deliveries_total{{webhook=\"{webhook}\",{labels}}}"),
        )
    };
    for (labels, count) in [
        (r#"outcome="accepted",code="none""#, Some(1.0)),
        (r#"outcome="refused",code="invalid_signature""#, Some(1.0)),
        (r#"outcome="refused",code="overloaded""#, Some(1.0)),
    ] {
        assert_eq!(deliveries("events", labels), count, "{labels}");
        // Nothing was a batch (the recorder was not described, so nothing is at zero either).
        assert_eq!(deliveries("batch", labels), None, "{labels}");
    }
    assert_eq!(
        value(
            &recorder,
            r#"polytomic_webhook_in_flight{webhook="events"}"#
        ),
        Some(0.0)
    );
}
