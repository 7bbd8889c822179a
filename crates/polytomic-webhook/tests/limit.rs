//! The server-wide bounds, around a service whose answers the test releases one by one.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use polytomic_webhook::limit::{InFlightLimitLayer, ServerLimits};
use polytomic_webhook::metrics::prometheus_recorder;
use polytomic_webhook::testing::prometheus_value;
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A service that answers 200 once the test adds a permit to `gate`, one per answer.
fn gated(
    gate: &Arc<Semaphore>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future: Send,
> + Clone
+ use<> {
    let gate = Arc::clone(gate);
    service_fn(move |_request: Request<Full<Bytes>>| {
        let gate = Arc::clone(&gate);
        async move {
            gate.acquire().await.unwrap().forget();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    })
}

fn request() -> Request<Full<Bytes>> {
    Request::post("/")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

#[tokio::test]
async fn a_delivery_beyond_the_bound_waits_then_gets_503_overloaded_with_retry_after() {
    let recorder = prometheus_recorder();
    let _installed = metrics::set_default_local_recorder(&recorder);
    let gate = Arc::new(Semaphore::new(0));
    let limits = ServerLimits::default()
        .max_in_flight(1)
        .queue_wait(Duration::from_millis(50));
    let service = InFlightLimitLayer::new(&limits).layer(gated(&gate));

    let first = tokio::spawn(service.clone().oneshot(request()));
    tokio::task::yield_now().await;
    let refused = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[CONTENT_TYPE], "application/problem+json");
    assert_eq!(refused.headers()[RETRY_AFTER], "1");
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "overloaded");
    assert_eq!(
        prometheus_value(
            &recorder.handle().render(),
            r#"polytomic_webhook_deliveries_total{outcome="refused",code="overloaded"}"#
        ),
        Some(1.0)
    );

    // The first one was never disturbed, and once it is answered the place is free again.
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    gate.add_permits(1);
    let next = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(next.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_delivery_that_finds_a_place_within_its_wait_is_served() {
    let gate = Arc::new(Semaphore::new(0));
    // A generous wait: this is about being served at all, not about speed.
    let limits = ServerLimits::default()
        .max_in_flight(1)
        .queue_wait(Duration::from_secs(30));
    let service = InFlightLimitLayer::new(&limits).layer(gated(&gate));

    let first = tokio::spawn(service.clone().oneshot(request()));
    tokio::task::yield_now().await;
    let second = tokio::spawn(service.clone().oneshot(request()));
    tokio::task::yield_now().await;
    assert!(!second.is_finished());
    gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_cancelled_delivery_gives_its_place_back() {
    let gate = Arc::new(Semaphore::new(0));
    let limits = ServerLimits::default()
        .max_in_flight(1)
        .queue_wait(Duration::from_millis(50));
    let service = InFlightLimitLayer::new(&limits).layer(gated(&gate));

    let first = tokio::spawn(service.clone().oneshot(request()));
    tokio::task::yield_now().await;
    // The client goes away: hyper drops the future.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    gate.add_permits(1);
    let next = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(next.status(), StatusCode::OK);
}
