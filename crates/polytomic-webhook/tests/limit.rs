//! The server-wide bounds, around a service whose answers the test releases one by one.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use polytomic_webhook::limit::{
    DecodedBudgetLayer, InFlightLimitLayer, PER_DELIVERY_RESERVE, ServerLimits,
};
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

/// Room for one delivery at a time; the next waits up to `wait`.
fn one_place(wait: Duration) -> ServerLimits {
    ServerLimits::default().max_in_flight(1).queue_wait(wait)
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
    let service =
        InFlightLimitLayer::new(&one_place(Duration::from_millis(50))).layer(gated(&gate));

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
            r#"polytomic_webhook_deliveries_total{webhook="batch",outcome="refused",code="overloaded"}"#
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
    let service = InFlightLimitLayer::new(&one_place(Duration::from_secs(30))).layer(gated(&gate));

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
    let service =
        InFlightLimitLayer::new(&one_place(Duration::from_millis(50))).layer(gated(&gate));

    let first = tokio::spawn(service.clone().oneshot(request()));
    tokio::task::yield_now().await;
    // The client goes away: hyper drops the future.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    gate.add_permits(1);
    let next = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(next.status(), StatusCode::OK);
}

/// Reads the whole body, then answers 200 once `gate` lets it, or 400 at once when the body
/// failed.
fn reading(
    gate: &Arc<Semaphore>,
) -> impl Service<
    Request<polytomic_webhook::limit::BudgetBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future: Send,
> + Clone
+ use<> {
    let gate = Arc::clone(gate);
    service_fn(
        move |request: Request<polytomic_webhook::limit::BudgetBody<Full<Bytes>>>| {
            let gate = Arc::clone(&gate);
            async move {
                let mut response = Response::new(Full::new(Bytes::new()));
                if request.into_body().collect().await.is_err() {
                    *response.status_mut() = StatusCode::BAD_REQUEST;
                } else {
                    gate.acquire().await.unwrap().forget();
                }
                Ok::<_, Infallible>(response)
            }
        },
    )
}

fn body_of(len: usize) -> Request<Full<Bytes>> {
    Request::post("/")
        .body(Full::new(Bytes::from(vec![b' '; len])))
        .unwrap()
}

/// The answer's status and problem code (a problem must carry `Retry-After: 1`).
async fn status_and_code<B>(response: Response<B>) -> (StatusCode, Option<String>)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let status = response.status();
    let retry_after = response.headers().get(RETRY_AFTER).cloned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| json["code"].as_str().map(str::to_owned));
    if code.is_some() {
        assert_eq!(retry_after.unwrap(), "1");
    }
    (status, code)
}

#[tokio::test]
async fn a_body_past_the_budget_is_answered_503_overloaded_whatever_the_handler_says() {
    let gate = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let limits = ServerLimits::default().max_decoded_in_flight(PER_DELIVERY_RESERVE + 100);
    let service = DecodedBudgetLayer::new(&limits).layer(reading(&gate));

    // The handler saw a failed body and answered 400; the sender is told to retry instead.
    let over = service.clone().oneshot(body_of(101)).await.unwrap();
    assert_eq!(
        status_and_code(over).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("overloaded".to_owned())
        )
    );
    // What it drew was given back: a body that fits goes through, again and again.
    for _ in 0..3 {
        let fits = service.clone().oneshot(body_of(100)).await.unwrap();
        assert_eq!(status_and_code(fits).await, (StatusCode::OK, None));
    }
}

#[tokio::test]
async fn the_budget_is_shared_and_held_until_the_delivery_is_answered() {
    let gate = Arc::new(Semaphore::new(0));
    // Room for two deliveries' reserves and 150 bytes between them.
    let limits = ServerLimits::default().max_decoded_in_flight(2 * PER_DELIVERY_RESERVE + 150);
    let service = DecodedBudgetLayer::new(&limits).layer(reading(&gate));

    let first = tokio::spawn(service.clone().oneshot(body_of(100)));
    // Until the first has read its body (and waits for the gate), its bytes are drawn.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let second = service.clone().oneshot(body_of(100)).await.unwrap();
    assert_eq!(
        status_and_code(second).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("overloaded".to_owned())
        )
    );
    gate.add_permits(1);
    assert_eq!(
        status_and_code(first.await.unwrap().unwrap()).await,
        (StatusCode::OK, None)
    );
    gate.add_permits(1);
    let third = service.clone().oneshot(body_of(100)).await.unwrap();
    assert_eq!(status_and_code(third).await, (StatusCode::OK, None));
}

/// A body of `frames` one-byte frames that counts how many were read.
struct Counted {
    left: usize,
    read: Arc<std::sync::atomic::AtomicUsize>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        self.read.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b" ")))))
    }
}

#[tokio::test]
async fn an_overloaded_refusal_reads_the_unread_body_first_so_the_client_hears_it() {
    let gate = Arc::new(Semaphore::new(0));
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = |left| Counted {
        left,
        read: Arc::clone(&read),
    };
    let held = Arc::clone(&gate);
    let service = InFlightLimitLayer::new(&one_place(Duration::from_millis(50))).layer(service_fn(
        move |_request: Request<Counted>| {
            let gate = Arc::clone(&held);
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }
        },
    ));

    let first = tokio::spawn(service.clone().oneshot(Request::new(body(0))));
    tokio::task::yield_now().await;
    let refused = service
        .clone()
        .oneshot(Request::new(body(10)))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 10);
    // Read to its end: the connection can carry the next request.
    assert!(refused.headers().get(http::header::CONNECTION).is_none());
    gate.add_permits(1);
    first.await.unwrap().unwrap();
}
