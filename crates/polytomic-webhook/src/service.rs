//! [`PolytomicWebhook`]: the composed middleware service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body::Body;
use polytomic_webhook_auth::{Clock, SystemClock};
use polytomic_webhook_core::body::BoxError;
use polytomic_webhook_core::response::{ResponseBody, ResponseFuture};
use polytomic_webhook_decompression::{DecompressionBody, DecompressionInfo};
use tower_service::Service;

use crate::drain::Drain;
use crate::future::{DeliveryFuture, observe_batch};
use crate::layer::Checks;
use crate::timeout::TimeoutBody;

/// The request body the inner service receives: decoded as it streams, within the limits and
/// the body deadline.
pub type DeliveryBody<B> = DecompressionBody<TimeoutBody<B>>;

/// The middleware built by [`PolytomicWebhookLayer`](crate::PolytomicWebhookLayer).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use polytomic_webhook::DeliveryBody;
/// use polytomic_webhook::prelude::*;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let layer = PolytomicWebhookLayer::new(
///     PolytomicWebhookConfig::default().secret(Secret::new("s3cret").unwrap()),
/// )
/// .unwrap();
/// let service = layer.layer(service_fn(
///     |_request: http::Request<DeliveryBody<Full<Bytes>>>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
///     },
/// ));
/// let request = http::Request::post("/").body(Full::new(Bytes::new())).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 401);
/// # });
/// ```
pub struct PolytomicWebhook<S, C = SystemClock> {
    inner: S,
    checks: Arc<Checks<C>>,
}

impl<S, C> PolytomicWebhook<S, C> {
    pub(crate) fn new(inner: S, checks: Arc<Checks<C>>) -> Self {
        Self { inner, checks }
    }

    polytomic_webhook_core::inner_service_accessors!();
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for PolytomicWebhook<S, C>
where
    S: Service<Request<DeliveryBody<ReqBody>>, Response = Response<ResBody>>,
    C: Clock,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = DeliveryFuture<S::Future, TimeoutBody<ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let span = delivery_span(&request);
        let (future, drain, info) = {
            let _entered = span.enter();
            match self.checks.admit(request) {
                Ok(mut request) => {
                    observe_batch(&mut request, &span);
                    let info = request.extensions().get::<DecompressionInfo>().cloned();
                    let future = ResponseFuture::inner(self.inner.call(request));
                    (future, Drain::none(), info)
                }
                Err(refused) => {
                    let (problem, drain) = *refused;
                    (ResponseFuture::rejected(&problem), drain, None)
                }
            }
        };
        DeliveryFuture::new(future, drain, span, started, info)
    }
}

/// The `polytomic_webhook.delivery` span of one request, for both composed layers: the fields
/// of both kinds of delivery are declared, and only those recorded are printed.
pub(crate) fn delivery_span<B>(request: &Request<B>) -> tracing::Span {
    tracing::info_span!(
        "polytomic_webhook.delivery",
        method = %request.method(),
        path = %request.uri().path(),
        content_coding = tracing::field::Empty,
        compressed_bytes = tracing::field::Empty,
        decompressed_bytes = tracing::field::Empty,
        sync_id = tracing::field::Empty,
        sync_name = tracing::field::Empty,
        record_count = tracing::field::Empty,
        signed_bytes = tracing::field::Empty,
        event_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

/// Takes the service that was polled ready, leaving a clone for the next request: a service
/// that must do async work before calling its inner one cannot borrow `self` across it.
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

impl<S: Clone, C> Clone for PolytomicWebhook<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            checks: Arc::clone(&self.checks),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for PolytomicWebhook<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolytomicWebhook")
            .field("inner", &self.inner)
            .field("checks", &self.checks)
            .finish()
    }
}
