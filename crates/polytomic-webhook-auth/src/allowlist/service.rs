use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use polytomic_webhook_core::response::{ResponseBody, ResponseFuture};
use tower_service::Service;

use super::forwarded::client_ip;
use super::layer::Settings;
use super::rejection::SourceIpRejection;
use crate::peer::{ClientIp, peer_addr};

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
        let Some(peer) = peer_addr(request.extensions()) else {
            let rejection = SourceIpRejection::NoPeerAddress;
            tracing::warn!(
                code = rejection.code(),
                peer = "unknown",
                "refused a webhook delivery: the server did not provide the peer address \
                 (serve with axum's `into_make_service_with_connect_info::<SocketAddr>()` \
                 or insert a `PeerAddr` request extension)",
            );
            return ResponseFuture::rejected(&rejection.to_problem());
        };
        let settings = &self.settings;
        let rejection = match client_ip(peer.ip(), request.headers(), &settings.trusted_proxies) {
            Ok(ip) if settings.allowed.contains(ip) => {
                request.extensions_mut().insert(ClientIp(ip));
                return ResponseFuture::inner(self.inner.call(request));
            }
            Ok(ip) => SourceIpRejection::NotAllowed { ip },
            Err(rejection) => rejection,
        };
        tracing::warn!(
            code = rejection.code(),
            peer = %peer,
            detail = %rejection,
            "refused a webhook delivery",
        );
        ResponseFuture::rejected(&rejection.to_problem())
    }
}
