//! Deduplicating organisation events by id: [`DedupLayer`], [`EventIdStore`] and
//! [`MemoryEventIdStore`].
//!
//! Polytomic retries an Events delivery that does not get a 2xx, up to five times, so the same
//! event can arrive more than once, and not necessarily in order. [`DedupLayer`] wraps the
//! handler so that each event id reaches it once, without ever losing an event:
//!
//! 1. it reads the envelope's `id`, from the events layer's parse (a [`VerifiedOrgEvent`])
//!    when there is one, else from the body (a delivery without one goes to the handler, whose
//!    extractor refuses it with the usual problem);
//! 2. it **reserves** the id in the store for a short lease, writing a random [`LeaseToken`]
//!    of its own. If the id was already handled, the
//!    delivery is answered `200 {"duplicate":true}` and the handler does not run. If another
//!    delivery of the same id holds the lease right now, the answer is `409` with the problem
//!    code `event_in_progress`: not a 2xx, so Polytomic tries again later, and the event is not
//!    lost if the handler that holds the lease fails;
//! 3. otherwise it runs the handler. Only a 2xx answer **commits** the id (kept for the
//!    configured TTL); any other answer, or an error, **releases** it, so the retry runs the
//!    handler again. Both present the token: a delivery commits or frees its own lease only,
//!    never one another delivery took after its own ran out;
//! 4. if the store cannot be reached or does not answer within the store timeout (5 s by
//!    default), the answer is `503` with the problem code `event_store_unavailable`: the
//!    handler does not run unchecked, and Polytomic retries.
//!
//! **A lease does not outlive its delivery's answer.** A reservation whose call failed or timed
//! out may still take effect (a Redis that was paused runs the command it had received when
//! it resumes); a delivery whose future is dropped (its client went away) never gets to
//! commit or release. In both cases, and when a commit or release itself fails, the lease is
//! handed to a background task that tries again (100 ms, then twice as long each time up to
//! 1 s) until the store answers, or until the lease would have run out anyway; a lease whose
//! reservation got no answer is released as soon as it is found. So once the store is back,
//! the next retry of a delivery answered 503 reaches the handler. At most
//! [`DedupLayer::max_pending`] leases (1,024 by default) wait for that task at once; past
//! that, one is left to run out. This needs a tokio runtime, which any server has. The task
//! counts the lease from when the reservation was sent: a reservation that reaches the store
//! more than a lease later (a store stalled that long) is not released, and holds its id for
//! a lease from when it landed.
//!
//! If the process dies while the handler runs, the lease expires by itself and a later retry
//! goes through. Choose the lease longer than the handler ever takes, and shorter than
//! Polytomic's retries last; the default is two minutes.
//!
//! Put the layer inside [`PolytomicOrgEventsLayer`](crate::PolytomicOrgEventsLayer), which
//! verifies the signature and bounds the body first:
//!
//! ```
//! use axum::{Router, routing::post};
//! use polytomic_webhook::dedup::{DedupLayer, MemoryEventIdStore};
//! use polytomic_webhook::prelude::*;
//!
//! async fn receive(event: PolytomicOrgEvent) -> &'static str {
//!     let _ = event.id();
//!     "ok"
//! }
//!
//! let config = PolytomicOrgEventsConfig::default().secrets(SigningSecrets::new("s3cret")?);
//! let app: Router = Router::new()
//!     .route("/webhooks/polytomic/events", post(receive))
//!     // Inner first: dedup wraps the handler, the events layer wraps both.
//!     .layer(DedupLayer::new(MemoryEventIdStore::new(100_000)))
//!     .layer(PolytomicOrgEventsLayer::new(config)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Sharing the store between replicas
//!
//! [`MemoryEventIdStore`] only deduplicates within one process, and forgets when it restarts.
//! The `polytomic-webhook-store` crate has two more: `SqliteEventIdStore` (feature `sqlite`:
//! one file, kept across restarts, on one machine) and `RedisEventIdStore` (feature `redis`:
//! shared by replicas), which maps [`EventIdStore`]'s three operations onto Redis as follows,
//! each a Lua script so that it is atomic:
//!
//! | operation | Redis |
//! |---|---|
//! | `reserve(id, token, lease)` | `SET key token PX lease` when the key is absent; else its value tells `done`, this token (claimed), or another token (in progress) |
//! | `commit(id, token, ttl)` | `SET key done PX ttl` only while the key holds `token` |
//! | `release(id, token)` | `DEL key` only while it holds `token` |
//!
//! `polytomic_webhook::testing::event_ids` (feature `testing`) is the suite every store here
//! passes; run it against a store of your own.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use polytomic_webhook_auth::{Clock, SystemClock};
use polytomic_webhook_core::Problem;
use polytomic_webhook_core::body::BoxError;
use polytomic_webhook_core::response::ResponseBody;
use polytomic_webhook_event::org::{VerifiedOrgEvent, envelope_id};
use polytomic_webhook_event::{EventConfig, EventRejection};
use tokio::sync::Semaphore;
use tower_layer::Layer;
use tower_service::Service;

mod lease;

pub use lease::LeaseToken;
use lease::{Lease, Owed, timed};

use crate::events::{EventBody, EventsFuture};
use crate::service::take_ready;

/// What [`EventIdStore::reserve`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reservation {
    /// The id was free (or already held under this very token): this delivery holds it until
    /// it commits or releases it, or the lease runs out.
    Claimed,
    /// Another delivery of the same id holds an unexpired lease.
    InProgress,
    /// The id was handled successfully before (and its TTL has not run out).
    Done,
}

/// Why a store could not answer. Carries no event data.
#[derive(Debug)]
pub struct StoreError(BoxError);

impl StoreError {
    /// Wraps the store's own error.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the event id store failed: {}", self.0)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Where [`DedupLayer`] remembers event ids; see the [module docs](self) for the protocol and
/// how it maps onto Redis. Each operation must be atomic with respect to the others for the
/// same id, and the token compared whole: `polytomic_webhook::testing::event_ids` (feature
/// `testing`) checks a store for all of it.
pub trait EventIdStore: Send + Sync + 'static {
    /// Claims `id` for `lease`, writing `token`, unless another token holds an unexpired
    /// lease on it ([`Reservation::InProgress`]) or it is done. `token` holding it already
    /// answers [`Reservation::Claimed`] again.
    fn reserve(
        &self,
        id: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Reservation, StoreError>> + Send;

    /// Marks `id` as handled, for `ttl`, if `token` still holds its lease; `Ok(false)`, with
    /// nothing changed, if it does not (the lease ran out, or was never taken).
    fn commit(
        &self,
        id: &str,
        token: &LeaseToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives up `token`'s lease on `id`, so that the next delivery of it runs the handler;
    /// `Ok(false)`, with nothing changed, if `token` does not hold it (a done id, another
    /// delivery's lease, none).
    fn release(
        &self,
        id: &str,
        token: &LeaseToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// An in-process [`EventIdStore`]: at most `capacity` ids, each forgotten after its TTL.
///
/// When full, it first forgets expired ids, then the handled id that would expire first.
/// Ids being handled are never evicted; when every slot holds one, `reserve` fails (the layer
/// answers 503 and Polytomic retries). Eviction scans the map, so it costs O(capacity), but
/// only when the store is full.
///
/// The clock is injectable (any [`Clock`], such as a closure) for tests.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use polytomic_webhook::dedup::{EventIdStore, LeaseToken, MemoryEventIdStore, Reservation};
///
/// let store = MemoryEventIdStore::new(1_000);
/// let (mine, theirs) = (LeaseToken::random().unwrap(), LeaseToken::random().unwrap());
/// let lease = Duration::from_secs(60);
/// assert_eq!(store.reserve("evt-1", &mine, lease).await.unwrap(), Reservation::Claimed);
/// assert_eq!(store.reserve("evt-1", &theirs, lease).await.unwrap(), Reservation::InProgress);
/// assert!(!store.release("evt-1", &theirs).await.unwrap()); // not theirs to free
/// assert!(store.commit("evt-1", &mine, Duration::from_secs(3600)).await.unwrap());
/// assert_eq!(store.reserve("evt-1", &theirs, lease).await.unwrap(), Reservation::Done);
/// # });
/// ```
pub struct MemoryEventIdStore<C = SystemClock> {
    capacity: usize,
    clock: C,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// `None` once handled; the holder's token while its lease runs.
    held_by: Option<LeaseToken>,
    expires: DateTime<Utc>,
}

impl Entry {
    fn done(&self) -> bool {
        self.held_by.is_none()
    }
}

impl MemoryEventIdStore {
    /// A store for at most `capacity` ids (at least one), on the system clock.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: SystemClock,
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<C> MemoryEventIdStore<C> {
    /// Uses `clock` instead of the system clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> MemoryEventIdStore<C2> {
        MemoryEventIdStore {
            capacity: self.capacity,
            clock,
            entries: self.entries,
        }
    }

    /// How many ids are remembered (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // The map is consistent after every statement, so a panic elsewhere cannot corrupt it.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Clock> MemoryEventIdStore<C> {
    fn reserve_now(
        &self,
        id: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> Result<Reservation, StoreError> {
        let now = self.clock.now();
        let mut entries = self.lock();
        if let Some(entry) = entries.get(id).filter(|entry| entry.expires > now) {
            return Ok(match entry.held_by {
                None => Reservation::Done,
                Some(holder) if holder == *token => Reservation::Claimed,
                Some(_) => Reservation::InProgress,
            });
        }
        if !entries.contains_key(id) && entries.len() >= self.capacity {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .filter(|(_, entry)| entry.done())
                    .min_by_key(|(_, entry)| entry.expires)
                    .map(|(id, _)| id.clone());
                let Some(oldest) = oldest else {
                    return Err(StoreError::new("every slot holds an event being handled"));
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(
            id.to_owned(),
            Entry {
                held_by: Some(*token),
                expires: later(now, lease),
            },
        );
        Ok(Reservation::Claimed)
    }

    /// Whether `token` holds an unexpired lease on `id` in `entries`.
    fn holds(&self, entries: &HashMap<String, Entry>, id: &str, token: &LeaseToken) -> bool {
        let now = self.clock.now();
        entries
            .get(id)
            .is_some_and(|entry| entry.held_by == Some(*token) && entry.expires > now)
    }

    fn commit_now(&self, id: &str, token: &LeaseToken, ttl: Duration) -> bool {
        let mut entries = self.lock();
        if !self.holds(&entries, id, token) {
            return false;
        }
        entries.insert(
            id.to_owned(),
            Entry {
                held_by: None,
                expires: later(self.clock.now(), ttl),
            },
        );
        true
    }

    fn release_now(&self, id: &str, token: &LeaseToken) -> bool {
        let mut entries = self.lock();
        let holds = self.holds(&entries, id, token);
        if holds {
            entries.remove(id);
        }
        holds
    }
}

fn later(now: DateTime<Utc>, after: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(after)
        .ok()
        .and_then(|after| now.checked_add_signed(after))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl<C: Clock + Send + Sync + 'static> EventIdStore for MemoryEventIdStore<C> {
    fn reserve(
        &self,
        id: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Reservation, StoreError>> + Send {
        std::future::ready(self.reserve_now(id, token, lease))
    }

    fn commit(
        &self,
        id: &str,
        token: &LeaseToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        std::future::ready(Ok(self.commit_now(id, token, ttl)))
    }

    fn release(
        &self,
        id: &str,
        token: &LeaseToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        std::future::ready(Ok(self.release_now(id, token)))
    }
}

impl<C> fmt::Debug for MemoryEventIdStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEventIdStore")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// A response extension marking a duplicate the layer answered itself; the delivery log line
/// reports it as `outcome="duplicate"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DuplicateEvent;

/// How long [`DedupLayer`] remembers a handled id unless told otherwise: seven days, which
/// outlasts any retry schedule by far. The events layer's `max_event_age` defaults to it, so
/// an event old enough to be forgotten is refused for its age instead.
pub const DEFAULT_EVENT_ID_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Wraps a handler so that each event id reaches it once; see the [module docs](self).
#[must_use]
pub struct DedupLayer<St> {
    store: Arc<St>,
    lease: Duration,
    ttl: Duration,
    store_timeout: Duration,
    /// One permit per lease the background may be settling at once.
    pending: Arc<Semaphore>,
    max_pending: usize,
}

/// [`DedupLayer::max_pending`]'s default.
const MAX_PENDING: usize = 1024;

impl<St: EventIdStore> DedupLayer<St> {
    /// Dedups through `store`, with a two-minute lease, a seven-day TTL
    /// ([`DEFAULT_EVENT_ID_TTL`]) and a five-second store timeout.
    ///
    /// Seven days outlasts any retry schedule by far; with a bounded store, capacity, not the
    /// TTL, is what limits how far back a duplicate is recognised.
    pub fn new(store: St) -> Self {
        Self::shared(Arc::new(store))
    }

    /// Dedups through a store shared with other code (several routes, or a test).
    pub fn shared(store: Arc<St>) -> Self {
        Self {
            store,
            lease: Duration::from_secs(120),
            ttl: DEFAULT_EVENT_ID_TTL,
            store_timeout: Duration::from_secs(5),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            max_pending: MAX_PENDING,
        }
    }

    /// How long a delivery may hold an id while its handler runs.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a handled id is remembered.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a delivery waits for each answer of the store (5 s by default); past it the
    /// delivery is answered 503 `event_store_unavailable` and its lease released in the
    /// background.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// How many leases may wait at once for the background task to commit or release them
    /// (1,024 by default); see the [module docs](self).
    pub fn max_pending(mut self, leases: usize) -> Self {
        self.pending = Arc::new(Semaphore::new(leases.min(Semaphore::MAX_PERMITS)));
        self.max_pending = leases;
        self
    }
}

impl<St> Clone for DedupLayer<St> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            lease: self.lease,
            ttl: self.ttl,
            store_timeout: self.store_timeout,
            pending: Arc::clone(&self.pending),
            max_pending: self.max_pending,
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for DedupLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupLayer")
            .field("store", &self.store)
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .field("store_timeout", &self.store_timeout)
            .field("max_pending", &self.max_pending)
            .finish()
    }
}

impl<S, St> Layer<S> for DedupLayer<St> {
    type Service = Dedup<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Dedup {
            inner,
            layer: self.clone(),
        }
    }
}

/// The middleware built by [`DedupLayer`].
pub struct Dedup<S, St> {
    inner: S,
    layer: DedupLayer<St>,
}

impl<S, St> Dedup<S, St> {
    polytomic_webhook_core::inner_service_accessors!();
}

impl<S: Clone, St> Clone for Dedup<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug> fmt::Debug for Dedup<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for Dedup<S, St>
where
    S: Service<Request<EventBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    St: EventIdStore,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = EventsFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let inner = take_ready(&mut self.inner);
        let layer = self.layer.clone();
        Box::pin(dedup(layer, inner, request))
    }
}

async fn dedup<S, St, ReqBody, ResBody>(
    layer: DedupLayer<St>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<EventBody>, Response = Response<ResBody>>,
    St: EventIdStore,
    ReqBody: Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
{
    let limit = request.extensions().get::<EventConfig>().map_or_else(
        || EventConfig::default().max_body_bytes,
        |config| config.max_body_bytes,
    );
    // The events layer's body is one `Bytes`: collecting it takes that buffer, copying nothing.
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return Ok(refuse(
                &EventRejection::from_body_error(error, None).to_problem(),
            ));
        }
    };
    // The id of the events layer's parse; read from the body only behind some other layer.
    let id = match parts.extensions.get::<VerifiedOrgEvent>() {
        Some(verified) => Some(verified.event().id().to_owned()),
        None => envelope_id(&body),
    };
    let request = Request::from_parts(parts, Full::new(body));
    let Some(id) = id else {
        // The extractor explains what is wrong with the envelope.
        return call(&mut inner, request).await;
    };
    // A duplicate never reaches the extractor, which would otherwise name the event.
    tracing::Span::current().record("event_id", id.as_str());
    let token = match LeaseToken::random() {
        Ok(token) => token,
        Err(error) => return Ok(store_unavailable(&error)),
    };
    // From here on, whatever stops this future (an error, a timeout, a client gone) leaves
    // nothing held: the lease's drop settles what is still owed.
    let mut lease = Lease::new(&layer, id, token);
    let reserved = layer.store.reserve(lease.id(), lease.token(), layer.lease);
    match timed(layer.store_timeout, reserved).await {
        Ok(Reservation::Claimed) => lease.owe(Owed::Release),
        Ok(Reservation::Done) => {
            lease.owe(Owed::Nothing);
            return Ok(duplicate());
        }
        Ok(Reservation::InProgress) => {
            lease.owe(Owed::Nothing);
            return Ok(in_progress(layer.lease));
        }
        Err(error) => return Ok(store_unavailable(&error)),
    }
    let result = call(&mut inner, request).await;
    let handled = matches!(&result, Ok(response) if response.status().is_success());
    // The handler's answer stands either way; what cannot be recorded now is retried in the
    // background.
    lease.owe(if handled { Owed::Commit } else { Owed::Release });
    lease.settle().await;
    result
}

async fn call<S, ResBody>(
    inner: &mut S,
    request: Request<EventBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<EventBody>, Response = Response<ResBody>>,
{
    inner
        .call(request)
        .await
        .map(|response| response.map(ResponseBody::inner))
}

fn refuse<B>(problem: &Problem) -> Response<ResponseBody<B>> {
    problem.to_response().map(ResponseBody::rejected)
}

fn duplicate<B>() -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::rejected(Bytes::from_static(
        br#"{"duplicate":true}"#,
    )));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.extensions_mut().insert(DuplicateEvent);
    response
}

fn in_progress<B>(lease: Duration) -> Response<ResponseBody<B>> {
    let problem = Problem::new(
        StatusCode::CONFLICT,
        "event_in_progress",
        "another delivery of this event is being handled; retry later",
    )
    .with_header(RETRY_AFTER, HeaderValue::from(lease.as_secs().max(1)));
    refuse(&problem)
}

fn store_unavailable<B>(error: &StoreError) -> Response<ResponseBody<B>> {
    tracing::warn!(%error, "the event id store is unavailable");
    refuse(&Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "event_store_unavailable",
        "the receiver cannot check for duplicates right now; retry later",
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    const LEASE: Duration = Duration::from_secs(60);
    const TTL: Duration = Duration::from_secs(3600);
    const MINE: LeaseToken = LeaseToken::from_bytes([1; 16]);
    const THEIRS: LeaseToken = LeaseToken::from_bytes([2; 16]);

    /// A store on a clock the test moves by hand.
    fn store(capacity: usize) -> (MemoryEventIdStore<impl Clock>, Arc<AtomicI64>) {
        let seconds = Arc::new(AtomicI64::new(1_700_000_000));
        let now = Arc::clone(&seconds);
        let clock = move || {
            DateTime::<Utc>::from_timestamp(now.load(Ordering::SeqCst), 0).unwrap_or_default()
        };
        (MemoryEventIdStore::new(capacity).clock(clock), seconds)
    }

    #[test]
    fn a_handled_id_is_a_duplicate_until_its_ttl_runs_out() {
        let (store, clock) = store(10);
        assert_eq!(
            store.reserve_now("a", &MINE, LEASE).unwrap(),
            Reservation::Claimed
        );
        assert!(store.commit_now("a", &MINE, TTL));
        assert_eq!(
            store.reserve_now("a", &MINE, LEASE).unwrap(),
            Reservation::Done
        );
        clock.fetch_add(3599, Ordering::SeqCst);
        assert_eq!(
            store.reserve_now("a", &MINE, LEASE).unwrap(),
            Reservation::Done
        );
        clock.fetch_add(1, Ordering::SeqCst);
        assert_eq!(
            store.reserve_now("a", &MINE, LEASE).unwrap(),
            Reservation::Claimed
        );
    }

    #[test]
    fn a_lease_that_is_never_settled_runs_out() {
        let (store, clock) = store(10);
        assert_eq!(
            store.reserve_now("a", &MINE, LEASE).unwrap(),
            Reservation::Claimed
        );
        assert_eq!(
            store.reserve_now("a", &THEIRS, LEASE).unwrap(),
            Reservation::InProgress
        );
        clock.fetch_add(60, Ordering::SeqCst);
        assert_eq!(
            store.reserve_now("a", &MINE, LEASE).unwrap(),
            Reservation::Claimed
        );
    }

    #[test]
    fn release_frees_a_claim_but_never_a_handled_id() {
        let (store, _) = store(10);
        store.reserve_now("a", &MINE, LEASE).unwrap();
        assert!(!store.release_now("a", &THEIRS));
        assert!(store.release_now("a", &MINE));
        assert_eq!(
            store.reserve_now("a", &THEIRS, LEASE).unwrap(),
            Reservation::Claimed
        );
        assert!(!store.commit_now("a", &MINE, TTL));
        assert!(store.commit_now("a", &THEIRS, TTL));
        assert!(!store.release_now("a", &THEIRS));
        assert_eq!(
            store.reserve_now("a", &MINE, LEASE).unwrap(),
            Reservation::Done
        );
    }

    #[test]
    fn capacity_is_kept_by_forgetting_the_oldest_handled_id() {
        let (store, clock) = store(3);
        for id in ["a", "b", "c"] {
            store.reserve_now(id, &MINE, LEASE).unwrap();
            assert!(store.commit_now(id, &MINE, TTL));
            clock.fetch_add(1, Ordering::SeqCst);
        }
        assert_eq!(
            store.reserve_now("d", &MINE, LEASE).unwrap(),
            Reservation::Claimed
        );
        assert_eq!(store.len(), 3);
        // "a" expired first, so it went; the others are still known.
        assert_eq!(
            store.reserve_now("b", &MINE, LEASE).unwrap(),
            Reservation::Done
        );
        assert_eq!(
            store.reserve_now("c", &MINE, LEASE).unwrap(),
            Reservation::Done
        );
        assert_eq!(
            store.reserve_now("d", &THEIRS, LEASE).unwrap(),
            Reservation::InProgress
        );
        assert_eq!(
            store.reserve_now("a", &MINE, LEASE).unwrap(),
            Reservation::Claimed
        );
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn ids_being_handled_are_never_evicted() {
        let (store, clock) = store(2);
        store.reserve_now("a", &MINE, LEASE).unwrap();
        store.reserve_now("b", &MINE, LEASE).unwrap();
        assert!(store.reserve_now("c", &MINE, LEASE).is_err());
        assert_eq!(
            store.reserve_now("a", &THEIRS, LEASE).unwrap(),
            Reservation::InProgress
        );
        // Once a lease runs out, its slot can be reused.
        clock.fetch_add(60, Ordering::SeqCst);
        assert_eq!(
            store.reserve_now("c", &MINE, LEASE).unwrap(),
            Reservation::Claimed
        );
    }
}
