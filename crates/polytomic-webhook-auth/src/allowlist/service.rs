use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use polytomic_webhook_core::response::{ResponseBody, ResponseFuture};
use tower_service::Service;

use super::layer::Settings;
use crate::peer::refuse;

/// Middleware that refuses requests from outside the allowed address blocks.
///
/// Built by [`SourceIpAllowlistLayer`](super::SourceIpAllowlistLayer); see the
/// [module docs](super).
///
/// ```
/// use polytomic_webhook_auth::allowlist::{SourceIpAllowlistLayer, parse_block};
/// use tower::{Layer, service_fn};
///
/// let service = SourceIpAllowlistLayer::new([parse_block("203.0.113.0/24")?])
///     .layer(service_fn(|_: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     }));
/// # Ok::<(), polytomic_webhook_auth::allowlist::InvalidBlock>(())
/// ```
#[derive(Clone, Debug)]
pub struct SourceIpAllowlist<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> SourceIpAllowlist<S> {
    pub(super) fn new(inner: S, settings: Arc<Settings>) -> Self {
        Self { inner, settings }
    }

    polytomic_webhook_core::inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SourceIpAllowlist<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
    ResBody::Data: From<Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match self.settings.check(&mut request) {
            Ok(()) => ResponseFuture::inner(self.inner.call(request)),
            Err(rejection) => refuse(
                request.extensions(),
                rejection.code(),
                &rejection,
                &rejection.to_problem(),
            ),
        }
    }
}
