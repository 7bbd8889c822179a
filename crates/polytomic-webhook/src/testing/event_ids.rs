//! The behaviour every [`EventIdStore`] must have, as one suite: a function per case, each
//! generic over the store. The memory, SQLite and Redis stores of this workspace pass all of
//! them; run them against a store of your own the same way.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use polytomic_webhook::dedup::MemoryEventIdStore;
//! use polytomic_webhook::testing::event_ids;
//!
//! event_ids::check_event_id_store(&MemoryEventIdStore::new(100)).await;
//! # }
//! ```
//!
//! [`stalled_reservations_are_released`] needs a store that can be paused ([`Stall`]): a
//! Redis can be sent `SIGSTOP`; any other store can be wrapped in a [`StallingStore`].

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // A failed unwrap is a failed test.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tower_layer::Layer;
use tower_service::Service;

use super::EventDelivery;
use crate::dedup::{DedupLayer, EventIdStore, LeaseToken, Reservation, StoreError};
use crate::prelude::{PolytomicOrgEventsConfig, PolytomicOrgEventsLayer, SigningSecrets};

const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(3600);

/// An id no other call in this process (nor, very likely, any other process) returns, so that
/// cases sharing one backend do not see each other's ids.
pub fn fresh_id(case: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!(
        "{case}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn token() -> LeaseToken {
    LeaseToken::random().unwrap()
}

/// Every quick case below, one after the other.
pub async fn check_event_id_store(store: &impl EventIdStore) {
    claim_in_progress_and_done(store).await;
    a_wrong_token_neither_commits_nor_releases(store).await;
    ids_are_compared_whole(store).await;
}

/// A claim excludes every other token until it is settled; reserving again with the holder's
/// token is still a claim; a commit makes the id a duplicate for everyone; a release frees it.
pub async fn claim_in_progress_and_done(store: &impl EventIdStore) {
    let (id, other) = (fresh_id("claim"), fresh_id("claim-other"));
    let (first, second) = (token(), token());
    let reserve = |id: &str, token: LeaseToken| {
        let id = id.to_owned();
        async move { store.reserve(&id, &token, LEASE).await.unwrap() }
    };
    assert_eq!(reserve(&id, first).await, Reservation::Claimed);
    assert_eq!(reserve(&id, second).await, Reservation::InProgress);
    assert_eq!(reserve(&id, first).await, Reservation::Claimed);
    assert_eq!(reserve(&other, second).await, Reservation::Claimed);

    assert!(store.release(&id, &first).await.unwrap());
    assert_eq!(reserve(&id, second).await, Reservation::Claimed);
    assert!(store.commit(&id, &second, TTL).await.unwrap());
    assert_eq!(reserve(&id, first).await, Reservation::Done);
    assert_eq!(reserve(&id, second).await, Reservation::Done);
    // A handled id stays handled: its holder's release and commit find no lease.
    assert!(!store.release(&id, &second).await.unwrap());
    assert!(!store.commit(&id, &second, TTL).await.unwrap());
    assert_eq!(reserve(&id, first).await, Reservation::Done);
    // The other id was not touched by any of it.
    assert_eq!(reserve(&other, first).await, Reservation::InProgress);
}

/// A token that does not hold the lease changes nothing: neither a commit nor a release with
/// it, nor either on an id nobody reserved.
pub async fn a_wrong_token_neither_commits_nor_releases(store: &impl EventIdStore) {
    let id = fresh_id("wrong-token");
    let (holder, stranger) = (token(), token());
    let third = token();
    assert_eq!(
        store.reserve(&id, &holder, LEASE).await.unwrap(),
        Reservation::Claimed
    );
    assert!(!store.commit(&id, &stranger, TTL).await.unwrap());
    assert!(!store.release(&id, &stranger).await.unwrap());
    // Still the holder's: neither a duplicate nor free.
    assert_eq!(
        store.reserve(&id, &third, LEASE).await.unwrap(),
        Reservation::InProgress
    );
    assert!(store.commit(&id, &holder, TTL).await.unwrap());
    assert_eq!(
        store.reserve(&id, &third, LEASE).await.unwrap(),
        Reservation::Done
    );

    let nobody = fresh_id("nobody");
    assert!(!store.release(&nobody, &stranger).await.unwrap());
    assert!(!store.commit(&nobody, &stranger, TTL).await.unwrap());
    // A commit without a lease did not mark it done.
    assert_eq!(
        store.reserve(&nobody, &third, LEASE).await.unwrap(),
        Reservation::Claimed
    );
}

/// Ids are compared whole, whatever characters they hold.
pub async fn ids_are_compared_whole(store: &impl EventIdStore) {
    let base = fresh_id("whole");
    let odd = format!("{base}-a\"b:{{c}}*%_'\\");
    for id in [
        odd.clone(),
        odd[..odd.len() - 1].to_owned(),
        format!("{odd}x"),
    ] {
        assert_eq!(
            store.reserve(&id, &token(), LEASE).await.unwrap(),
            Reservation::Claimed,
            "{id}"
        );
    }
}

/// A lease that is never settled runs out by itself, and a handled id is forgotten after its
/// TTL. Takes about a second (the store's own expiry, given a generous margin).
pub async fn leases_and_ttls_run_out(store: &impl EventIdStore) {
    let short = Duration::from_millis(200);
    let (leased, handled) = (fresh_id("lease-runs-out"), fresh_id("ttl-runs-out"));
    let holder = token();
    assert_eq!(
        store.reserve(&leased, &holder, short).await.unwrap(),
        Reservation::Claimed
    );
    assert_eq!(
        store.reserve(&handled, &holder, LEASE).await.unwrap(),
        Reservation::Claimed
    );
    assert!(store.commit(&handled, &holder, short).await.unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The lease is gone: its holder cannot commit it any more.
    assert!(!store.commit(&leased, &holder, TTL).await.unwrap());
    for id in [&leased, &handled] {
        assert_eq!(
            store.reserve(id, &token(), LEASE).await.unwrap(),
            Reservation::Claimed,
            "{id}"
        );
    }
}

/// A store's backend that a test can pause and resume: a [`StallingStore`] (see its example),
/// or a Redis sent `SIGSTOP` and `SIGCONT`.
pub trait Stall: Send + Sync {
    /// From now on, the store answers nothing.
    fn stall(&self);
    /// The store works again, and what it was sent meanwhile takes effect.
    fn resume(&self);
}

/// Any store, made pausable as a Redis is: an operation called while it is stalled takes
/// effect once it resumes, even if its caller has given up on it by then (a timed-out or
/// dropped future), just as a paused Redis runs the commands it had received. Its operations
/// run on tasks of their own, so it needs a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use polytomic_webhook::dedup::{EventIdStore, LeaseToken, MemoryEventIdStore, Reservation};
/// use polytomic_webhook::testing::event_ids::{Stall, StallingStore};
///
/// let store = StallingStore::new(MemoryEventIdStore::new(10));
/// let token = LeaseToken::random().unwrap();
/// store.stall();
/// let late = tokio::time::timeout(
///     Duration::from_millis(50),
///     store.reserve("evt", &token, Duration::from_secs(60)),
/// );
/// assert!(late.await.is_err()); // no answer while stalled; the caller gives up
/// store.resume();
/// // The reservation took effect all the same.
/// let other = LeaseToken::random().unwrap();
/// let answer = store.reserve("evt", &other, Duration::from_secs(60)).await.unwrap();
/// assert_eq!(answer, Reservation::InProgress);
/// # }
/// ```
#[derive(Debug)]
pub struct StallingStore<St> {
    inner: Arc<St>,
    open: watch::Sender<bool>,
}

impl<St: EventIdStore> StallingStore<St> {
    /// `inner`, working until [`Stall::stall`].
    pub fn new(inner: St) -> Self {
        Self {
            inner: Arc::new(inner),
            open: watch::Sender::new(true),
        }
    }

    /// Runs `operation` on a task of its own once the store is open, so that it happens even
    /// when the returned future is dropped.
    fn once_open<T, F, Fut>(&self, operation: F) -> impl Future<Output = Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(Arc<St>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let mut open = self.open.subscribe();
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            let _ = open.wait_for(|open| *open).await;
            operation(inner).await
        });
        async move { task.await.map_err(StoreError::new)? }
    }
}

impl<St> Stall for StallingStore<St>
where
    St: Send + Sync,
{
    fn stall(&self) {
        self.open.send_replace(false);
    }

    fn resume(&self) {
        self.open.send_replace(true);
    }
}

impl<St: EventIdStore> EventIdStore for StallingStore<St> {
    fn reserve(
        &self,
        id: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Reservation, StoreError>> + Send {
        let (id, token) = (id.to_owned(), *token);
        self.once_open(move |inner| async move { inner.reserve(&id, &token, lease).await })
    }

    fn commit(
        &self,
        id: &str,
        token: &LeaseToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (id, token) = (id.to_owned(), *token);
        self.once_open(move |inner| async move { inner.commit(&id, &token, ttl).await })
    }

    fn release(
        &self,
        id: &str,
        token: &LeaseToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (id, token) = (id.to_owned(), *token);
        self.once_open(move |inner| async move { inner.release(&id, &token).await })
    }
}

const SECRET: &str = "event-id-suite-secret";

/// A handler that counts its runs and answers 200.
#[derive(Clone, Debug, Default)]
struct Counting(Arc<AtomicUsize>);

impl<B> Service<Request<B>> for Counting {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(String::new())))
    }
}

/// Sends the event `id` through `service`: its status and problem `code` (or body).
async fn send<Sv, B>(service: &Sv, id: &str) -> (StatusCode, String)
where
    Sv: Service<Request<axum_core::body::Body>, Response = Response<B>> + Clone,
    Sv::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let mut service = service.clone();
    poll_fn(|cx| service.poll_ready(cx)).await.unwrap();
    let request = EventDelivery::new("sync.completed")
        .id(id)
        .secret(SECRET)
        .build();
    let response = service.call(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|problem| problem.get("code")?.as_str().map(str::to_owned));
    (status, code.unwrap_or(text))
}

/// The stuck-reservation cases, on a store paused for `pause` (the issue's 6 s for Redis):
///
/// - a delivery whose reservation gets no answer within the layer's store timeout (5/6 of
///   `pause`: 5 s for 6 s, Redis's own response timeout) is answered 503
///   `event_store_unavailable`; the reservation takes effect when the store resumes;
/// - another delivery is dropped while it waits on the store (its client went away);
///
/// and 2 s after the store resumes, a retry of each reaches the handler, once: their leases
/// were released. A third try is a duplicate. Both run at once, so the case takes about
/// `pause` + 2 s.
pub async fn stalled_reservations_are_released<St: EventIdStore>(
    store: Arc<St>,
    stall: &impl Stall,
    pause: Duration,
) {
    let handler = Counting::default();
    let config = PolytomicOrgEventsConfig::default().secrets(SigningSecrets::new(SECRET).unwrap());
    let dedup = DedupLayer::shared(store).store_timeout(pause * 5 / 6);
    let service = PolytomicOrgEventsLayer::new(config)
        .unwrap()
        .layer(dedup.layer(handler.clone()));
    let (timed_out, dropped) = (fresh_id("timed-out"), fresh_id("dropped"));
    // A store that has served before (Redis has the scripts cached, say), so that what it was
    // sent during the pause does take effect once it resumes.
    let warm_up = fresh_id("warm-up");
    assert_eq!(
        send(&service, &warm_up).await,
        (StatusCode::OK, String::new())
    );

    stall.stall();
    let resumed = tokio::time::Instant::now() + pause;
    let answered = send(&service, &timed_out);
    let disconnected = async {
        // The client gives up well before any timeout: the delivery's future is dropped.
        let given_up = tokio::time::timeout(pause / 6, send(&service, &dropped)).await;
        assert!(given_up.is_err(), "answered while the store was paused");
    };
    let (answer, ()) = tokio::join!(answered, disconnected);
    assert_eq!(
        answer,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "event_store_unavailable".to_owned()
        )
    );
    tokio::time::sleep_until(resumed).await;
    stall.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(handler.0.load(Ordering::SeqCst), 1);
    for (runs, id) in [(2, &timed_out), (3, &dropped)] {
        assert_eq!(
            send(&service, id).await,
            (StatusCode::OK, String::new()),
            "{id}"
        );
        assert_eq!(handler.0.load(Ordering::SeqCst), runs, "{id}");
    }
    for id in [&timed_out, &dropped] {
        assert_eq!(
            send(&service, id).await,
            (StatusCode::OK, r#"{"duplicate":true}"#.to_owned()),
            "{id}"
        );
    }
    assert_eq!(handler.0.load(Ordering::SeqCst), 3);
}
