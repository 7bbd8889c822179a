//! One shape for every check the stack makes before its handler runs.
//!
//! A [`Check`] looks at a request (its head, usually) and either lets it through, possibly
//! with a new body type (the decompression stage wraps the body in a decoder), or refuses it.
//! [`CheckService`] runs one check in front of any service; the stage layers of the auth and
//! decompression crates are that service with their check, and the composed
//! `PolytomicWebhookLayer` runs the same checks in order. So a stage answers a request alike
//! wherever it runs: the same problem, and the same draining of the unread body under the same
//! deadline ([`DrainPolicy`]'s default is the composed layer's default configuration).
//!
//! In the spirit of tower-http's `ValidateRequest`, with two differences: a check may change the
//! body type, and a refusal is a typed [`Rejection`] in a [`Refused`] that keeps the request rather
//! than a ready response, so whoever runs the check decides how to answer: log and drain as a stage
//! does, or fold the refusals of several checks into one answer as the composed layer does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::BoxError;
use crate::body::DEFAULT_MAX_COMPRESSED_BYTES;
use crate::drain::Drain;
use crate::peer::{DisplayPeer, peer_addr};
use crate::response::{ResponseBody, ResponseFuture};
use crate::timeout::{DEFAULT_BODY_TIMEOUT, TimeoutBody};
use crate::{Problem, Rejection};

/// A check that a request must pass before the next service sees it.
///
/// ```
/// use std::fmt;
///
/// use http::{Request, StatusCode};
/// use polytomic_webhook_core::check::{Check, Refused};
/// use polytomic_webhook_core::{Problem, Rejection};
///
/// /// Refuses requests without a `x-tenant` header.
/// struct NeedsTenant;
///
/// #[derive(Debug)]
/// struct NoTenant;
///
/// impl fmt::Display for NoTenant {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         f.write_str("no tenant header")
///     }
/// }
///
/// impl std::error::Error for NoTenant {}
///
/// impl Rejection for NoTenant {
///     fn status(&self) -> StatusCode {
///         StatusCode::BAD_REQUEST
///     }
///
///     fn code(&self) -> &'static str {
///         "no_tenant"
///     }
///
///     fn to_problem(&self) -> Problem {
///         Problem::new(self.status(), self.code(), self.to_string())
///     }
/// }
///
/// impl<B> Check<B> for NeedsTenant {
///     type Body = B;
///     type Refusal = NoTenant;
///
///     fn check(&self, request: Request<B>) -> Result<Request<B>, Refused<B, NoTenant>> {
///         let verdict = match request.headers().contains_key("x-tenant") {
///             true => Ok(()),
///             false => Err(NoTenant),
///         };
///         Refused::before_body(request, verdict)
///     }
/// }
///
/// let refused = NeedsTenant.check(Request::new(())).err().unwrap();
/// assert_eq!(refused.refusal().code(), "no_tenant");
/// ```
pub trait Check<B> {
    /// The request body the next service receives.
    type Body;
    /// Why a request is refused.
    type Refusal: Rejection;

    /// Lets `request` through, prepared for the next service, or refuses it.
    // Both variants carry the request, so boxing the refusal would not make the result
    // smaller; it would only add an allocation per refusal.
    #[allow(clippy::result_large_err)]
    fn check(&self, request: Request<B>) -> Result<Request<Self::Body>, Refused<B, Self::Refusal>>;
}

impl<B, K: Check<B> + ?Sized> Check<B> for Arc<K> {
    type Body = K::Body;
    type Refusal = K::Refusal;

    fn check(&self, request: Request<B>) -> Result<Request<Self::Body>, Refused<B, Self::Refusal>> {
        (**self).check(request)
    }
}

/// A refused request: why, and the request itself, whose body is still unread.
#[derive(Debug)]
pub struct Refused<B, R> {
    refusal: R,
    request: Request<B>,
    drain: bool,
}

impl<B, R> Refused<B, R> {
    /// Refused from the head alone: the body is worth draining before the answer, so that an
    /// HTTP/1.1 client still sending it hears the answer (see [`Drain`]).
    #[allow(clippy::result_large_err)] // As for `Check::check`: both variants hold the request.
    pub fn before_body(request: Request<B>, verdict: Result<(), R>) -> Result<Request<B>, Self> {
        match verdict {
            Ok(()) => Ok(request),
            Err(refusal) => Err(Self {
                refusal,
                request,
                drain: true,
            }),
        }
    }

    /// Refused for what the head says about the body (its size or coding): the body is left
    /// unread, as draining it would be of no use or no help.
    pub fn keep_body(request: Request<B>, refusal: R) -> Self {
        Self {
            refusal,
            request,
            drain: false,
        }
    }

    /// Why the request was refused.
    pub fn refusal(&self) -> &R {
        &self.refusal
    }

    /// Why the request was refused, dropping the request.
    pub fn into_refusal(self) -> R {
        self.refusal
    }

    /// The refused request.
    pub fn request(&self) -> &Request<B> {
        &self.request
    }

    /// The same refusal, with `f` applied to the unread body.
    pub fn map_body<B2>(self, f: impl FnOnce(B) -> B2) -> Refused<B2, R> {
        Refused {
            refusal: self.refusal,
            request: self.request.map(f),
            drain: self.drain,
        }
    }
}

impl<B: Body, R: Rejection> Refused<B, R> {
    /// The answer: the problem, and what to drain before sending it (nothing without a
    /// budget, or when the check left the body unread on purpose).
    pub fn into_answer(self, budget: Option<u64>) -> (Problem, Drain<B>) {
        let drain = match budget {
            Some(budget) if self.drain => Drain::new(self.request, budget),
            _ => Drain::none(),
        };
        (self.refusal.to_problem(), drain)
    }

    /// Logs the refusal as a stage used on its own does: one `warn` event with the problem
    /// code, the peer address and the detail.
    fn log(&self) {
        tracing::warn!(
            code = self.refusal.code(),
            peer = %DisplayPeer(peer_addr(self.request.extensions())),
            detail = %self.refusal,
            "refused a webhook delivery",
        );
    }
}

/// What a [`CheckService`] does with the body of a request it refuses.
///
/// The default drains as `PolytomicWebhookLayer` does with its default configuration: up to
/// [`DEFAULT_MAX_COMPRESSED_BYTES`] within [`DEFAULT_BODY_TIMEOUT`]. So a stage stacked on its
/// own answers a refused HTTP/1.1 client the same way the composed layer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainPolicy {
    budget: Option<u64>,
    timeout: Option<Duration>,
}

impl DrainPolicy {
    /// Leaves the body unread: the server decides what happens to it (hyper closes an HTTP/1.1
    /// connection whose request body was not read, which a client still sending may see as a
    /// reset instead of the answer).
    pub const fn none() -> Self {
        Self {
            budget: None,
            timeout: None,
        }
    }

    /// Reads and discards up to `budget` bytes of the body, within the body deadline
    /// `timeout` (`None` for none), before answering; as the composed layer does, with its
    /// compressed-size limit as the budget.
    pub const fn drain(budget: u64, timeout: Option<Duration>) -> Self {
        Self {
            budget: Some(budget),
            timeout,
        }
    }
}

impl Default for DrainPolicy {
    fn default() -> Self {
        Self::drain(DEFAULT_MAX_COMPRESSED_BYTES, Some(DEFAULT_BODY_TIMEOUT))
    }
}

/// Runs the check `K` in front of `S`: refused requests are answered with their problem, a
/// `warn` event, and (with a [`DrainPolicy`] that drains) their body drained first.
///
/// ```
/// use std::convert::Infallible;
///
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Empty;
/// use polytomic_webhook_core::check::CheckService;
/// # use polytomic_webhook_core::check::{Check, Refused};
/// # use polytomic_webhook_core::{Problem, Rejection};
/// # struct NeedsTenant;
/// # #[derive(Debug)]
/// # struct NoTenant;
/// # impl std::fmt::Display for NoTenant {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("no tenant") }
/// # }
/// # impl std::error::Error for NoTenant {}
/// # impl Rejection for NoTenant {
/// #     fn status(&self) -> http::StatusCode { http::StatusCode::BAD_REQUEST }
/// #     fn code(&self) -> &'static str { "no_tenant" }
/// #     fn to_problem(&self) -> Problem { Problem::new(http::StatusCode::BAD_REQUEST, "no_tenant", "no tenant") }
/// # }
/// # impl<B> Check<B> for NeedsTenant {
/// #     type Body = B;
/// #     type Refusal = NoTenant;
/// #     fn check(&self, request: Request<B>) -> Result<Request<B>, Refused<B, NoTenant>> {
/// #         let verdict = if request.headers().contains_key("x-tenant") { Ok(()) } else { Err(NoTenant) };
/// #         Refused::before_body(request, verdict)
/// #     }
/// # }
/// use tower::ServiceExt;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let inner = tower::service_fn(|_: Request<Empty<Bytes>>| async {
///     Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
/// });
/// let service = CheckService::new(inner, NeedsTenant);
/// let response = service.oneshot(Request::new(Empty::new())).await.unwrap();
/// assert_eq!(response.status(), 400);
/// # });
/// ```
pub struct CheckService<S, K> {
    inner: S,
    check: Arc<K>,
    drain: DrainPolicy,
}

impl<S, K> CheckService<S, K> {
    /// Runs `check` in front of `inner`, draining refused bodies by the default
    /// [`DrainPolicy`].
    pub fn new(inner: S, check: impl Into<Arc<K>>) -> Self {
        Self {
            inner,
            check: check.into(),
            drain: DrainPolicy::default(),
        }
    }

    /// Sets what is done with the body of a refused request.
    #[must_use]
    pub fn drain(mut self, policy: DrainPolicy) -> Self {
        self.drain = policy;
        self
    }

    /// The check.
    pub fn check(&self) -> &K {
        &self.check
    }

    crate::inner_service_accessors!();
}

impl<S, K, B, ResBody> Service<Request<B>> for CheckService<S, K>
where
    K: Check<B>,
    S: Service<Request<K::Body>, Response = Response<ResBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = CheckFuture<S::Future, TimeoutBody<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.check.check(request) {
            Ok(request) => CheckFuture::new(
                ResponseFuture::inner(self.inner.call(request)),
                Drain::none(),
            ),
            Err(refused) => {
                let DrainPolicy { budget, timeout } = self.drain;
                let refused = refused.map_body(|body| TimeoutBody::new(body, timeout));
                refused.log();
                let (problem, drain) = refused.into_answer(budget);
                CheckFuture::new(ResponseFuture::rejected(&problem), drain)
            }
        }
    }
}

impl<S: Clone, K> Clone for CheckService<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            check: Arc::clone(&self.check),
            drain: self.drain,
        }
    }
}

impl<S: fmt::Debug, K: fmt::Debug> fmt::Debug for CheckService<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckService")
            .field("inner", &self.inner)
            .field("check", &self.check)
            .field("drain", &self.drain)
            .finish()
    }
}

pin_project! {
    /// Response future of [`CheckService`]: drains a refused request's body (`B`), then
    /// answers; the inner service's response for a request that passed.
    ///
    /// Draining waits with tokio's timer: poll it on a tokio runtime with its time driver
    /// enabled (as `#[tokio::main]` and every server runtime have).
    #[derive(Debug)]
    pub struct CheckFuture<F, B> {
        #[pin]
        drain: Drain<B>,
        #[pin]
        inner: ResponseFuture<F>,
    }
}

impl<F, B> CheckFuture<F, B> {
    /// Drains `drain`, then answers with `inner`.
    pub fn new(inner: ResponseFuture<F>, drain: Drain<B>) -> Self {
        Self { drain, inner }
    }
}

impl<F, B, ResBody, E> Future for CheckFuture<F, B>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        ready!(this.drain.as_mut().poll_drain(cx));
        let mut result = ready!(this.inner.poll(cx));
        if this.drain.closes() {
            close_connection(&mut result);
        }
        Poll::Ready(result)
    }
}

/// Marks the answer to a request whose body was left unread as the connection's last: the rest
/// of that body would otherwise be taken for the next request.
pub fn close_connection<B, E>(result: &mut Result<Response<B>, E>) {
    if let Ok(response) = result {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use http::StatusCode;
    use http_body::Frame;
    use http_body_util::Empty;
    use tokio::time::{Instant, Sleep, sleep};
    use tower::ServiceExt;

    use super::*;

    /// Refuses requests without an `x-tenant` header, from the head; with `keep`, leaves the
    /// body unread as the decompression check does.
    struct NeedsTenant {
        keep: bool,
    }

    #[derive(Debug)]
    struct NoTenant;

    impl fmt::Display for NoTenant {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("no tenant header")
        }
    }

    impl std::error::Error for NoTenant {}

    impl Rejection for NoTenant {
        fn status(&self) -> StatusCode {
            StatusCode::BAD_REQUEST
        }

        fn code(&self) -> &'static str {
            "no_tenant"
        }

        fn to_problem(&self) -> Problem {
            Problem::new(StatusCode::BAD_REQUEST, self.code(), self.to_string())
        }
    }

    impl<B> Check<B> for NeedsTenant {
        type Body = B;
        type Refusal = NoTenant;

        fn check(&self, request: Request<B>) -> Result<Request<B>, Refused<B, NoTenant>> {
            if request.headers().contains_key("x-tenant") {
                Ok(request)
            } else if self.keep {
                Err(Refused::keep_body(request, NoTenant))
            } else {
                Refused::before_body(request, Err(NoTenant))
            }
        }
    }

    /// A body of `frames` one-byte frames, then (with `trickle`) one more every half second
    /// forever; it records whether it was read to its end.
    struct Sending {
        frames: usize,
        trickle: Option<Pin<Box<Sleep>>>,
        ended: Arc<AtomicBool>,
    }

    impl Body for Sending {
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let this = self.get_mut();
            let frame = || Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))));
            if this.frames > 0 {
                this.frames -= 1;
                return frame();
            }
            if let Some(trickle) = &mut this.trickle {
                ready!(trickle.as_mut().poll(cx));
                let next = Instant::now() + Duration::from_millis(500);
                trickle.as_mut().reset(next);
                return frame();
            }
            this.ended.store(true, Ordering::SeqCst);
            Poll::Ready(None)
        }

        type Data = Bytes;
        type Error = Infallible;
    }

    fn sending(frames: usize, trickle: bool) -> (Request<Sending>, Arc<AtomicBool>) {
        let ended = Arc::new(AtomicBool::new(false));
        let body = Sending {
            frames,
            trickle: trickle.then(|| Box::pin(sleep(Duration::ZERO))),
            ended: Arc::clone(&ended),
        };
        (Request::new(body), ended)
    }

    fn service(
        keep: bool,
        drain: DrainPolicy,
    ) -> CheckService<
        impl Service<
            Request<Sending>,
            Response = Response<Empty<Bytes>>,
            Error = Infallible,
            Future: Send,
        > + Clone,
        NeedsTenant,
    > {
        let inner = tower::service_fn(|_: Request<Sending>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        CheckService::new(inner, NeedsTenant { keep }).drain(drain)
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn a_refusal_is_answered_with_its_problem_and_logged_with_its_code() {
        use http_body_util::BodyExt;

        let (request, ended) = sending(3, false);
        let capture = crate::logs::LogCapture::start();
        let future = service(false, DrainPolicy::none()).oneshot(request);
        let response = future.await.unwrap();
        let logs = capture.finish();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let code = response.extensions().get::<crate::ProblemCode>().copied();
        assert_eq!(code.map(|code| code.as_str()), Some("no_tenant"));
        assert!(response.headers().get(CONNECTION).is_none());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, NoTenant.to_problem().to_json());
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains("code=\"no_tenant\""), "{logs}");
        assert!(logs.contains("peer=unknown"), "{logs}");
        assert!(logs.contains("detail=no tenant header"), "{logs}");
        // Without a drain policy the body is left to the server.
        assert!(!ended.load(Ordering::SeqCst));
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn a_passing_request_reaches_the_inner_service_unlogged() {
        let (mut request, _) = sending(0, false);
        request
            .headers_mut()
            .insert("x-tenant", HeaderValue::from_static("a"));
        let capture = crate::logs::LogCapture::start();
        let response = service(false, DrainPolicy::drain(1024, None))
            .oneshot(request)
            .await
            .unwrap();
        let logs = capture.finish();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.extensions().get::<crate::ProblemCode>().is_none());
        assert!(!logs.contains("refused"), "{logs}");
    }

    #[tokio::test]
    async fn with_a_drain_policy_the_refused_body_is_read_to_its_end_first() {
        let (request, ended) = sending(3, false);
        let policy = DrainPolicy::drain(1024, None);
        let response = service(false, policy).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(ended.load(Ordering::SeqCst));
        assert!(response.headers().get(CONNECTION).is_none());
    }

    #[tokio::test]
    async fn a_refused_body_over_the_budget_is_given_up_and_the_connection_closed() {
        let (request, ended) = sending(3, false);
        let policy = DrainPolicy::drain(2, None);
        let response = service(false, policy).oneshot(request).await.unwrap();
        assert!(!ended.load(Ordering::SeqCst));
        assert_eq!(response.headers()[CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_check_that_keeps_the_body_is_not_drained_whatever_the_policy() {
        let (request, ended) = sending(3, false);
        let policy = DrainPolicy::drain(1024, None);
        let response = service(true, policy).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(!ended.load(Ordering::SeqCst));
        assert!(response.headers().get(CONNECTION).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_refused_body_is_drained_only_until_the_deadline() {
        let deadline = Duration::from_secs(5);
        let (request, ended) = sending(0, true);
        let started = Instant::now();
        let policy = DrainPolicy::drain(u64::MAX, Some(deadline));
        let response = service(false, policy).oneshot(request).await.unwrap();
        // One byte every half second never stalls the drain for a second: only the deadline
        // ends it, and the answer closes the connection.
        assert_eq!(started.elapsed(), deadline);
        assert!(!ended.load(Ordering::SeqCst));
        assert_eq!(response.headers()[CONNECTION], "close");
    }
}
