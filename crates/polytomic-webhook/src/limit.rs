//! Bounds on the whole server rather than on one request.
//!
//! The layer's limits hold per delivery: each may decode up to 32 MiB, and a thousand at once
//! would each get that allowance. [`InFlightLimitLayer`] bounds how many deliveries are handled
//! at once; put it in front of the webhook route, outside
//! [`PolytomicWebhookLayer`](crate::PolytomicWebhookLayer), so that a delivery waiting for its
//! turn has cost nothing yet. A delivery that finds every place taken waits briefly, then is
//! answered 503 `overloaded` with `Retry-After`.
//!
//! ```
//! use axum::{Router, routing::post};
//! use polytomic_webhook::limit::{InFlightLimitLayer, ServerLimits};
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
//!     .route_layer(PolytomicWebhookLayer::new(config)?)
//!     .route_layer(InFlightLimitLayer::new(&limits));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::header::{CONNECTION, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use polytomic_webhook_core::Problem;
use polytomic_webhook_core::body::BoxError;
use polytomic_webhook_core::response::{ResponseBody, ResponseFuture};
use polytomic_webhook_decompression::DecompressionConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_layer::Layer;
use tower_service::Service;

use crate::drain::Drain;
use crate::metrics::Outcome;
use crate::timeout::TimeoutBody;

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
}

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
}

/// The 503 `overloaded` problem, with `Retry-After`.
fn overloaded() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        OVERLOADED,
        "The receiver is handling as many deliveries as it may; retry shortly.",
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
}

impl InFlightLimitLayer {
    /// A bound of `limits.max_in_flight` deliveries, each beyond it waiting up to
    /// `limits.queue_wait`.
    pub fn new(limits: &ServerLimits) -> Self {
        Self {
            places: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            wait: limits.queue_wait,
            drain_limit: DecompressionConfig::default().max_compressed_bytes,
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        if let Ok(permit) = Arc::clone(&self.limit.places).try_acquire_owned() {
            return InFlightFuture::running(self.inner.call(request), permit, started);
        }
        // The service made ready by `poll_ready` is the one to call once a place is free.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let places = Arc::clone(&self.limit.places);
        let wait = self.limit.wait;
        InFlightFuture {
            started,
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
            // Held until the answer is ready.
            permit: Option<OwnedSemaphorePermit>,
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
    fn running(future: S::Future, permit: OwnedSemaphorePermit, started: Instant) -> Self {
        Self {
            started,
            drain_limit: 0,
            state: State::Running {
                future: ResponseFuture::inner(future),
                permit: Some(permit),
            },
        }
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
                        Some(permit) => State::Running {
                            future: ResponseFuture::inner(inner.call(request)),
                            permit: Some(permit),
                        },
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
                StateProj::Running { future, permit } => {
                    let result = ready!(future.poll(cx));
                    permit.take();
                    return Poll::Ready(result);
                }
                StateProj::Refusing { mut drain } => {
                    ready!(drain.as_mut().poll_drain(cx));
                    // Never seen by the webhook layer's own future: counted here.
                    Outcome::Refused(OVERLOADED).emit(None, this.started.elapsed());
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
