//! Bounds on the whole server rather than on one request.
//!
//! The layer's limits hold per delivery: each may decode up to 32 MiB, and a thousand at once
//! would each get that allowance. [`InFlightLimitLayer`] bounds how many deliveries are handled
//! at once; put it in front of the webhook route, outside
//! [`PolytomicWebhookLayer`](crate::PolytomicWebhookLayer), so that a delivery waiting for its
//! turn has cost nothing yet. A delivery that finds every place taken waits briefly, then is
//! answered 503 `overloaded` with `Retry-After`.
//!
//! [`DecodedBudgetLayer`] bounds the decoded bytes that all deliveries hold together: each
//! draws from one shared budget as its decoded body streams in and gives it all back once it
//! is answered. A delivery whose next bytes do not fit is stopped there, its body not decoded
//! further, and answered 503 `overloaded` with `Retry-After`. It goes inside the webhook layer,
//! where the body is the decoded one.
//!
//! ```
//! use axum::{Router, routing::post};
//! use polytomic_webhook::limit::{DecodedBudgetLayer, InFlightLimitLayer, ServerLimits};
//! use polytomic_webhook::prelude::*;
//!
//! async fn receive(batch: SyncRecords) -> Ack {
//!     Ack::from(&batch)
//! }
//!
//! let limits = ServerLimits::default();
//! let config = PolytomicWebhookConfig::default().secret(Secret::new("the-connection-secret")?);
//! let app: Router = Router::new()
//!     .route("/webhooks/polytomic", post(receive))
//!     .route_layer(DecodedBudgetLayer::new(&limits))
//!     .route_layer(PolytomicWebhookLayer::new(config)?)
//!     .route_layer(InFlightLimitLayer::new(&limits));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Buf;
use http::header::{CONNECTION, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use polytomic_webhook_core::Problem;
use polytomic_webhook_core::body::BoxError;
use polytomic_webhook_core::response::{ResponseBody, ResponseFuture};
use polytomic_webhook_decompression::DecompressionConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_layer::Layer;
use tower_service::Service;

use crate::drain::Drain;
use crate::metrics::{Outcome, Webhook};
use crate::timeout::TimeoutBody;
/// The server-wide bound on draining refused bodies that [`InFlightLimitLayer`] puts in each
/// request ([`InFlightLimitLayer::drain_budget`]).
pub use polytomic_webhook_core::drain::DrainBudget;
use polytomic_webhook_core::drain::HeldPlace;

/// The problem `code` of a delivery refused because the server is at one of its bounds.
pub const OVERLOADED: &str = "overloaded";

/// What `Retry-After` says on an `overloaded` answer, in seconds: a place frees up as soon as
/// a delivery in flight is answered, usually within milliseconds.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The server-wide bounds.
///
/// ```
/// use std::time::Duration;
///
/// use polytomic_webhook::limit::ServerLimits;
///
/// let limits = ServerLimits::default()
///     .max_in_flight(16)
///     .queue_wait(Duration::from_millis(250));
/// assert_eq!(limits.max_in_flight, 16);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Most deliveries handled at once. Default: [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// How long a delivery beyond that waits for a place before it is refused. Default:
    /// [`DEFAULT_QUEUE_WAIT`].
    pub queue_wait: Duration,
    /// Most decoded bytes all deliveries hold at once, each delivery counted from its first
    /// body byte until it is answered. Default: [`DEFAULT_MAX_DECODED_IN_FLIGHT`].
    pub max_decoded_in_flight: u64,
    /// Most refused bodies drained at once; a refusal beyond it is answered at once and its
    /// connection closed. Default: [`DEFAULT_MAX_DRAINING`].
    pub max_draining: usize,
    /// The longest one refused body is drained before its refusal is answered and the
    /// connection closed. Default: [`DEFAULT_DRAIN_TIME`].
    pub drain_time: Duration,
}

/// The default [`ServerLimits::max_draining`]: 64, as many as the deliveries in flight. A
/// drain buffers nothing, and one of a sender that is sending ends in milliseconds, so honest
/// senders refused together (a secret being rotated, a clock that drifted: 50 at once in the
/// tests) all hear their 401 on a connection that stays usable; what the bound stops is
/// senders without the secret that trickle.
pub const DEFAULT_MAX_DRAINING: usize = 64;

/// The default [`ServerLimits::drain_time`]: 5 seconds, long enough to read a few megabytes
/// from a slow honest sender, short enough that a trickler holds its drain briefly.
pub const DEFAULT_DRAIN_TIME: Duration = Duration::from_secs(5);

/// The default [`ServerLimits::max_decoded_in_flight`]: 256 MiB, room for eight deliveries at
/// the per-delivery limit of 32 MiB, or thousands of ordinary batches, at once.
pub const DEFAULT_MAX_DECODED_IN_FLIGHT: u64 = 256 * 1024 * 1024;

/// What each delivery draws from the decoded-bytes budget before its first byte, besides the
/// bytes themselves: its decoder's output buffer (up to 1 MiB) and the connection's read
/// buffer, which the budget would otherwise not see. It is what lets the budget bound memory
/// rather than only the decoded bytes.
pub const PER_DELIVERY_RESERVE: u64 = 1024 * 1024 + 512 * 1024;

/// The default [`ServerLimits::max_in_flight`]: 64.
///
/// An ordinary batch is answered within milliseconds, so 64 at once is thousands a second,
/// more than Polytomic's syncs send to one receiver. What it bounds is the worst case: each
/// delivery being decoded holds its own decoder and output buffers (about 1 MiB for a large
/// body) and up to its 32 MiB decoded-size limit.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// The default [`ServerLimits::queue_wait`]: one second, enough to ride out a burst (at a
/// thousand deliveries a second, a place frees up every millisecond) without holding a sender
/// that would do better to retry.
pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(1);

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            queue_wait: DEFAULT_QUEUE_WAIT,
            max_decoded_in_flight: DEFAULT_MAX_DECODED_IN_FLIGHT,
            max_draining: DEFAULT_MAX_DRAINING,
            drain_time: DEFAULT_DRAIN_TIME,
        }
    }
}

impl ServerLimits {
    /// Sets the most deliveries handled at once (at least 1).
    #[must_use]
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Sets how long a delivery waits for a place.
    #[must_use]
    pub fn queue_wait(mut self, wait: Duration) -> Self {
        self.queue_wait = wait;
        self
    }

    /// Sets the most decoded bytes all deliveries hold at once.
    #[must_use]
    pub fn max_decoded_in_flight(mut self, bytes: u64) -> Self {
        self.max_decoded_in_flight = bytes;
        self
    }

    /// Sets the most refused bodies drained at once (at least 1).
    #[must_use]
    pub fn max_draining(mut self, drains: usize) -> Self {
        self.max_draining = drains.max(1);
        self
    }

    /// Sets the longest a refused body is drained.
    #[must_use]
    pub fn drain_time(mut self, time: Duration) -> Self {
        self.drain_time = time;
        self
    }
}

/// The 503 `overloaded` problem, with `Retry-After`.
pub(crate) fn overloaded() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        OVERLOADED,
        "The receiver has no room for this delivery now; retry shortly.",
    )
    .with_header(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS))
}

/// Bounds the deliveries handled at once; see the [module docs](self).
///
/// Clones share one bound, so one layer applied to one route bounds that route, however many
/// connections serve it.
#[derive(Clone)]
#[must_use]
pub struct InFlightLimitLayer {
    places: Arc<Semaphore>,
    wait: Duration,
    drain_limit: u64,
    drains: DrainBudget,
}

impl InFlightLimitLayer {
    /// A bound of `limits.max_in_flight` deliveries, each beyond it waiting up to
    /// `limits.queue_wait`.
    pub fn new(limits: &ServerLimits) -> Self {
        Self {
            places: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            wait: limits.queue_wait,
            drain_limit: DecompressionConfig::default().max_compressed_bytes,
            drains: DrainBudget::new(limits.max_draining, limits.drain_time),
        }
    }

    /// The most bytes of a refused request's body read (and thrown away) before the refusal
    /// is sent, so that an HTTP/1.1 client still sending hears it rather than a reset; default
    /// the layer's default received-size limit. Set it to your
    /// `decompression.max_compressed_bytes` if you changed that.
    pub fn drain_limit(mut self, bytes: u64) -> Self {
        self.drain_limit = bytes;
        self
    }

    /// The drain budget this layer puts in each request (shared by its clones), for a layer
    /// that refuses requests before they reach this one: put it in their extensions (with
    /// tower-http's `AddExtensionLayer`, say) and their drains count against the same budget.
    pub fn drain_budget(&self) -> DrainBudget {
        self.drains.clone()
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightLimit {
            inner,
            limit: self.clone(),
        }
    }
}

impl fmt::Debug for InFlightLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightLimitLayer")
            .field("available", &self.places.available_permits())
            .field("wait", &self.wait)
            .field("drain_limit", &self.drain_limit)
            .field("drains_available", &self.drains.available())
            .finish()
    }
}

/// The service built by [`InFlightLimitLayer`].
#[derive(Clone, Debug)]
pub struct InFlightLimit<S> {
    inner: S,
    limit: InFlightLimitLayer,
}

impl<S, B, ResBody> Service<Request<B>> for InFlightLimit<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = InFlightFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        // Every refusal behind this layer drains within the server's drain budget.
        request.extensions_mut().insert(self.limit.drains.clone());
        // Inside the Events layer (which admitted the request), that layer counts the answer;
        // in front of a layer, this one counts it, as a batch delivery's.
        let counted = (!polytomic_webhook_event::__private::admitted_by_org_events_layer(
            request.extensions(),
        ))
        .then_some(Webhook::Batch);
        if let Ok(permit) = Arc::clone(&self.limit.places).try_acquire_owned() {
            return InFlightFuture::running(&mut self.inner, request, permit, started);
        }
        // The service made ready by `poll_ready` is the one to call once a place is free.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let places = Arc::clone(&self.limit.places);
        let wait = self.limit.wait;
        InFlightFuture {
            started,
            counted,
            drain_limit: self.limit.drain_limit,
            state: State::Waiting {
                place: Box::pin(async move {
                    tokio::time::timeout(wait, places.acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }),
                call: Some((inner, request)),
            },
        }
    }
}

/// Resolves to a place, or `None` when the wait is over.
type PlaceFuture = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

pin_project! {
    /// Response future of [`InFlightLimit`].
    pub struct InFlightFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        started: Instant,
        // How a refusal here is counted: `None` when the layer outside counts it.
        counted: Option<Webhook>,
        drain_limit: u64,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Waiting {
            place: PlaceFuture,
            call: Option<(S, Request<B>)>,
        },
        Running {
            #[pin]
            future: ResponseFuture<S::Future>,
            // Held until the answer is ready, or the request is refused inside.
            place: Option<Place>,
        },
        Refusing {
            #[pin]
            drain: Drain<TimeoutBody<B>>,
        },
    }
}

impl<S, B> InFlightFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn running(
        inner: &mut S,
        request: Request<B>,
        permit: OwnedSemaphorePermit,
        started: Instant,
    ) -> Self {
        Self {
            started,
            counted: None,
            drain_limit: 0,
            state: State::run(inner, request, permit),
        }
    }
}

impl<S, B> State<S, B>
where
    S: Service<Request<B>>,
{
    /// Calls `inner` with the place in the request, where a refusal inside gives it back.
    fn run(inner: &mut S, mut request: Request<B>, permit: OwnedSemaphorePermit) -> Self {
        let place = Place(HeldPlace::new(permit));
        request.extensions_mut().insert(place.0.clone());
        Self::Running {
            future: ResponseFuture::inner(inner.call(request)),
            place: Some(place),
        }
    }
}

/// A delivery's place, given back when its future completes or is dropped (or earlier, when the
/// request is refused inside and its body drained: see [`Drain::new`]).
struct Place(HeldPlace);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<S, B, ResBody> Future for InFlightFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { place, call } => {
                    let place = ready!(place.as_mut().poll(cx));
                    let (mut inner, request) =
                        call.take().expect("InFlightFuture polled after completion");
                    let next = match place {
                        Some(permit) => State::run(&mut inner, request, permit),
                        None => State::Refusing {
                            // The same deadline as an admitted body: a refused sender cannot
                            // hold the connection longer by trickling.
                            drain: Drain::new(
                                request.map(|body| {
                                    TimeoutBody::new(
                                        body,
                                        Some(crate::config::DEFAULT_BODY_TIMEOUT),
                                    )
                                }),
                                *this.drain_limit,
                            ),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Running { future, place } => {
                    let result = ready!(future.poll(cx));
                    place.take();
                    return Poll::Ready(result);
                }
                StateProj::Refusing { mut drain } => {
                    ready!(drain.as_mut().poll_drain(cx));
                    // Never seen by the webhook layer's own future: counted here.
                    if let Some(webhook) = *this.counted {
                        Outcome::Refused(OVERLOADED).emit(webhook, None, this.started.elapsed());
                    }
                    let mut response = overloaded().to_response();
                    if drain.closes() {
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::rejected)));
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for InFlightFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Running { .. } => "running",
            State::Refusing { .. } => "refusing",
        };
        f.debug_struct("InFlightFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Bounds the decoded bytes all deliveries hold at once; see the [module docs](self).
///
/// Clones share one budget.
#[derive(Clone, Debug)]
#[must_use]
pub struct DecodedBudgetLayer {
    budget: Arc<Budget>,
}

#[derive(Debug)]
struct Budget {
    available: AtomicU64,
}

impl Budget {
    /// Takes `bytes` if that many are available.
    fn draw(&self, bytes: u64) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                available.checked_sub(bytes)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.available.fetch_add(bytes, Ordering::AcqRel);
    }
}

impl DecodedBudgetLayer {
    /// A budget of `limits.max_decoded_in_flight` bytes.
    pub fn new(limits: &ServerLimits) -> Self {
        Self {
            budget: Arc::new(Budget {
                available: AtomicU64::new(limits.max_decoded_in_flight),
            }),
        }
    }
}

impl DecodedBudgetLayer {
    /// One delivery's share, for the events layer, which decodes the body itself and draws
    /// what it keeps (once a signature matched) the way [`BudgetBody`] draws a batch's frames.
    pub(crate) fn share(&self) -> Share {
        Share {
            budget: Arc::clone(&self.budget),
            held: AtomicU64::new(0),
            refused: AtomicBool::new(false),
        }
    }
}

impl<S> Layer<S> for DecodedBudgetLayer {
    type Service = DecodedBudget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodedBudget {
            inner,
            budget: Arc::clone(&self.budget),
        }
    }
}

/// The service built by [`DecodedBudgetLayer`].
#[derive(Clone, Debug)]
pub struct DecodedBudget<S> {
    inner: S,
    budget: Arc<Budget>,
}

/// One delivery's share of the budget, given back when both its body and its response future
/// are gone: the decoded bytes live until the handler has answered.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<Budget>,
    held: AtomicU64,
    refused: AtomicBool,
}

impl Share {
    /// Draws `bytes` more; on failure the delivery is marked refused.
    pub(crate) fn draw(&self, bytes: u64) -> bool {
        let drawn = self.budget.draw(bytes);
        if drawn {
            self.held.fetch_add(bytes, Ordering::AcqRel);
        } else {
            self.refused.store(true, Ordering::Release);
        }
        drawn
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.give_back(*self.held.get_mut());
    }
}

impl<S, B, ResBody> Service<Request<B>> for DecodedBudget<S>
where
    S: Service<Request<BudgetBody<B>>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = BudgetFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let share = Arc::new(Share {
            budget: Arc::clone(&self.budget),
            held: AtomicU64::new(0),
            refused: AtomicBool::new(false),
        });
        let request = request.map(|inner| BudgetBody {
            inner: Some(inner),
            share: Arc::clone(&share),
            reserved: false,
        });
        BudgetFuture {
            inner: self.inner.call(request),
            share,
        }
    }
}

pin_project! {
    /// The request body under a [`DecodedBudget`]: the decoded body, drawing from the budget
    /// as its frames arrive. Once a frame does not fit, the body ends with
    /// [`BudgetExhausted`] and the decoder under it is dropped.
    #[derive(Debug)]
    pub struct BudgetBody<B> {
        #[pin]
        inner: Option<B>,
        share: Arc<Share>,
        // Whether the per-delivery reserve is drawn.
        reserved: bool,
    }
}

impl<B> Body for BudgetBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        let frame = match ready!(inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        let mut bytes = frame.data_ref().map_or(0, |data| {
            u64::try_from(data.remaining()).unwrap_or(u64::MAX)
        });
        if !*this.reserved {
            bytes = bytes.saturating_add(PER_DELIVERY_RESERVE);
            *this.reserved = true;
        }
        if this.share.draw(bytes) {
            Poll::Ready(Some(Ok(frame)))
        } else {
            // Dropping the decoder stops the inflating and frees its buffers now.
            this.inner.set(None);
            Poll::Ready(Some(Err(Box::new(BudgetExhausted))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The error a [`BudgetBody`] ends with when the server's decoded-bytes budget is used up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetExhausted;

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server's budget of decoded bytes in flight is used up")
    }
}

impl std::error::Error for BudgetExhausted {}

pin_project! {
    /// Response future of [`DecodedBudget`]: the inner answer, or 503 `overloaded` for a
    /// delivery whose body ran out of budget, whatever the handler made of the cut-off body.
    #[derive(Debug)]
    pub struct BudgetFuture<F> {
        #[pin]
        inner: F,
        share: Arc<Share>,
    }
}

impl<F, ResBody, E> Future for BudgetFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        if this.share.refused.load(Ordering::Acquire) {
            // The batch was not kept: never a 2xx, and the sender should retry.
            return Poll::Ready(Ok(overloaded().to_response().map(ResponseBody::rejected)));
        }
        Poll::Ready(Ok(response.map(ResponseBody::inner)))
    }
}
