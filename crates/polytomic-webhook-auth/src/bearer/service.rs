use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use polytomic_webhook_core::response::{ResponseBody, ResponseFuture};
use tower_service::Service;

use super::layer::Settings;
use crate::clock::{Clock, SystemClock};
use crate::peer::refuse;

/// Middleware that refuses requests without a valid bearer secret and timestamp.
///
/// Built by [`BearerAuthLayer`](super::BearerAuthLayer); see the [module docs](super).
///
/// ```
/// use polytomic_webhook_auth::{BearerAuthLayer, Secret};
/// use tower::{Layer, service_fn};
///
/// let service = BearerAuthLayer::new(Secret::new("shh-value")?)
///     .layer(service_fn(|_: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     }));
/// assert!(!format!("{service:?}").contains("shh-value"));
/// # Ok::<(), polytomic_webhook_auth::InvalidSecret>(())
/// ```
pub struct BearerAuth<S, C = SystemClock> {
    inner: S,
    settings: Arc<Settings<C>>,
}

impl<S, C> BearerAuth<S, C> {
    pub(super) fn new(inner: S, settings: Arc<Settings<C>>) -> Self {
        Self { inner, settings }
    }

    polytomic_webhook_core::inner_service_accessors!();
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for BearerAuth<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
    ResBody::Data: From<Bytes>,
    C: Clock,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match self.settings.authorize_request(&mut request) {
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

impl<S: Clone, C> Clone for BearerAuth<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for BearerAuth<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish()
    }
}
