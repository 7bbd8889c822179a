//! Deduplication by event id behind the Events layer, with the in-memory store.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use http::StatusCode;
use http_body_util::BodyExt;
use polytomic_webhook::dedup::{
    DedupLayer, EventIdStore, LeaseToken, MemoryEventIdStore, Reservation, StoreError,
};
use polytomic_webhook::prelude::*;
use polytomic_webhook::testing::event_ids::{Stall, StallingStore};
use polytomic_webhook::testing::{EventDelivery, capture_logs};
use tower::ServiceExt;

const SECRET: &str = "whsec-dedup";
const ROUTE: &str = "/events";

fn events_layer() -> PolytomicOrgEventsLayer {
    let config = PolytomicOrgEventsConfig::default().secrets(SigningSecrets::new(SECRET).unwrap());
    PolytomicOrgEventsLayer::new(config).unwrap()
}

fn delivery() -> EventDelivery {
    EventDelivery::new("sync.completed")
        .uri(ROUTE)
        .id("evt-42")
        .counts(3, 2, 1)
        .secret(SECRET)
        .gzip(true)
}

async fn send(app: &Router, request: EventDelivery) -> (StatusCode, String) {
    let response = app.clone().oneshot(request.build()).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A handler that counts its runs and answers with the status the test sets.
#[derive(Clone, Default)]
struct Handler {
    runs: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

impl Handler {
    fn app<St: EventIdStore>(&self, dedup: DedupLayer<St>) -> Router {
        let handler = self.clone();
        Router::new()
            .route(
                ROUTE,
                post(move |_event: PolytomicOrgEvent| async move {
                    handler.runs.fetch_add(1, Ordering::SeqCst);
                    if handler.fail.load(Ordering::SeqCst) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }),
            )
            .layer(dedup)
            .layer(events_layer())
    }
}

#[tokio::test]
async fn six_deliveries_of_one_event_reach_the_handler_once() {
    let handler = Handler::default();
    let app = handler.app(DedupLayer::new(MemoryEventIdStore::new(1_000)));
    let mut answers = Vec::new();
    // The first try and Polytomic's five retries.
    for _ in 0..6 {
        answers.push(send(&app, delivery()).await);
    }
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    assert_eq!(answers[0], (StatusCode::OK, String::new()));
    for answer in &answers[1..] {
        assert_eq!(
            answer,
            &(StatusCode::OK, r#"{"duplicate":true}"#.to_owned())
        );
    }
    // Another event still goes through.
    assert_eq!(send(&app, delivery().id("evt-43")).await.0, StatusCode::OK);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_duplicate_is_logged_as_such() {
    let handler = Handler::default();
    let app = handler.app(DedupLayer::new(MemoryEventIdStore::new(10)));
    send(&app, delivery()).await;
    let (_, logs) = capture_logs(send(&app, delivery())).await;
    assert!(logs.contains("outcome=\"duplicate\""), "{logs}");
    assert!(logs.contains("event_id=\"evt-42\""), "{logs}");
}

#[tokio::test]
async fn a_failed_handler_lets_the_retry_through() {
    let handler = Handler::default();
    let app = handler.app(DedupLayer::new(MemoryEventIdStore::new(1_000)));
    handler.fail.store(true, Ordering::SeqCst);
    assert_eq!(
        send(&app, delivery()).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    handler.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        send(&app, delivery()).await,
        (StatusCode::OK, String::new())
    );
    assert_eq!(
        send(&app, delivery()).await.1,
        r#"{"duplicate":true}"#.to_owned()
    );
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
}

/// Holds a handler until the test opens it.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl Gate {
    fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            self.waiting.lock().unwrap().push(cx.waker().clone());
            Poll::Pending
        })
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        for waker in self.waiting.lock().unwrap().drain(..) {
            waker.wake();
        }
    }
}

/// A handler that counts its runs, waits at the gate, then fails while `fail` is set.
#[derive(Clone, Default)]
struct Gated {
    runs: Arc<AtomicUsize>,
    gate: Arc<Gate>,
    fail: Arc<AtomicBool>,
}

impl Gated {
    fn app(&self) -> Router {
        let this = self.clone();
        Router::new()
            .route(
                ROUTE,
                post(move |_event: PolytomicOrgEvent| async move {
                    this.runs.fetch_add(1, Ordering::SeqCst);
                    this.gate.wait().await;
                    if this.fail.load(Ordering::SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }),
            )
            .layer(DedupLayer::new(MemoryEventIdStore::new(10)))
            .layer(events_layer())
    }

    /// Polls `delivery` until it is inside the handler, waiting at the gate.
    async fn enter<F: Future>(&self, mut delivery: std::pin::Pin<&mut F>) {
        for _ in 0..100 {
            if self.runs.load(Ordering::SeqCst) == 1 {
                break;
            }
            poll_fn(|cx| {
                assert!(delivery.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            tokio::task::yield_now().await;
        }
        assert_eq!(self.runs.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn a_duplicate_during_a_run_is_told_to_retry_and_is_not_lost_if_the_run_fails() {
    let gated = Gated::default();
    gated.fail.store(true, Ordering::SeqCst);
    let (runs, gate, fail) = (&gated.runs, &gated.gate, &gated.fail);
    let app = gated.app();
    // The first delivery enters the handler and waits there.
    let mut first = pin!(app.clone().oneshot(delivery().build()));
    gated.enter(first.as_mut()).await;
    // A retry meanwhile is not acknowledged: Polytomic will try it again.
    let response = app.clone().oneshot(delivery().build()).await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(response.headers().contains_key("retry-after"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "event_in_progress");
    // The first run fails, so the next retry runs the handler and succeeds.
    gate.open();
    assert_eq!(
        first.await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    fail.store(false, Ordering::SeqCst);
    assert_eq!(send(&app, delivery()).await.0, StatusCode::OK);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        send(&app, delivery()).await.1,
        r#"{"duplicate":true}"#.to_owned()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A client that goes away while the handler runs drops the delivery's future: its lease is
/// released (in the background) rather than held until it runs out, so the retry runs the
/// handler.
#[tokio::test]
async fn a_delivery_dropped_while_its_handler_runs_lets_the_retry_through() {
    let gated = Gated::default();
    let app = gated.app();
    let mut first = Box::pin(app.clone().oneshot(delivery().build()));
    gated.enter(first.as_mut()).await;
    drop(first);
    gated.gate.open();
    // The release is a task of its own: let it run.
    let mut answer = send(&app, delivery()).await;
    for _ in 0..100 {
        if answer.0 != StatusCode::CONFLICT {
            break;
        }
        tokio::task::yield_now().await;
        answer = send(&app, delivery()).await;
    }
    assert_eq!(answer, (StatusCode::OK, String::new()));
    assert_eq!(gated.runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        send(&app, delivery()).await.1,
        r#"{"duplicate":true}"#.to_owned()
    );
}

/// At most `max_pending` leases wait for a background release: past it, a lease is left to run
/// out by itself, so a store that fails for every delivery cannot pile up background work.
#[tokio::test]
async fn past_max_pending_a_lease_is_left_to_run_out() {
    let store = Arc::new(StallingStore::new(MemoryEventIdStore::new(10)));
    let handler = Handler::default();
    let dedup = DedupLayer::shared(Arc::clone(&store))
        .store_timeout(Duration::from_millis(200))
        .max_pending(1);
    let app = handler.app(dedup);
    store.stall();
    let ((a, b), logs) = capture_logs(async {
        tokio::join!(
            send(&app, delivery().id("evt-a")),
            send(&app, delivery().id("evt-b"))
        )
    })
    .await;
    assert!(logs.contains("too many event leases"), "{logs}");
    for (status, body) in [a, b] {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("event_store_unavailable"), "{body}");
    }
    store.resume();
    // Time for the background retries (100, 200, 400 ms…) to land, as in the issue's "2 s
    // after the store is back".
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut answers = vec![
        send(&app, delivery().id("evt-a")).await.0,
        send(&app, delivery().id("evt-b")).await.0,
    ];
    answers.sort();
    // One lease was released; the other still holds its id (for the two-minute lease).
    assert_eq!(answers, [StatusCode::OK, StatusCode::CONFLICT]);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
}

/// A store that cannot be reached.
struct Down;

impl EventIdStore for Down {
    async fn reserve(
        &self,
        _: &str,
        _: &LeaseToken,
        _: Duration,
    ) -> Result<Reservation, StoreError> {
        Err(StoreError::new("connection refused"))
    }

    async fn commit(&self, _: &str, _: &LeaseToken, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::new("connection refused"))
    }

    async fn release(&self, _: &str, _: &LeaseToken) -> Result<bool, StoreError> {
        Err(StoreError::new("connection refused"))
    }
}

#[tokio::test]
async fn an_unreachable_store_answers_503_without_running_the_handler() {
    let handler = Handler::default();
    let app = handler.app(DedupLayer::new(Down));
    let (status, body) = send(&app, delivery()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("event_store_unavailable"), "{body}");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_delivery_without_an_id_reaches_the_extractor_which_refuses_it() {
    let handler = Handler::default();
    let app = handler.app(DedupLayer::new(MemoryEventIdStore::new(10)));
    let request = delivery().raw_json(br#"{"type":"sync.completed"}"#);
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("invalid_envelope"), "{body}");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
}
