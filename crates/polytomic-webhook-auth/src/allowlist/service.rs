use http::Request;
use polytomic_webhook_core::check::{Check, CheckService, Refused};

use super::forwarded::{ForwardedHeader, client_ip};
use super::net::BlockList;
use super::rejection::SourceIpRejection;
use crate::peer::{ClientIp, peer_addr};

/// Middleware that refuses requests from outside the allowed address blocks: the
/// [`SourceIpCheck`] in a [`CheckService`].
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
pub type SourceIpAllowlist<S> = CheckService<S, SourceIpCheck>;

/// The source-IP allowlist check: whether a request's client is inside the allowed blocks.
#[derive(Clone, Debug, Default)]
pub struct SourceIpCheck {
    pub(super) allowed: BlockList,
    pub(super) trusted_proxies: BlockList,
    pub(super) forwarded_header: ForwardedHeader,
}

impl SourceIpCheck {
    /// Lets the request through (recording its [`ClientIp`]) or says why not.
    pub(super) fn verdict<B>(&self, request: &mut Request<B>) -> Result<(), SourceIpRejection> {
        let Some(peer) = peer_addr(request.extensions()) else {
            // A deployment mistake rather than a hostile request: say how to fix it.
            tracing::warn!(
                "the server did not provide the peer address of a webhook delivery, so it is \
                 refused; serve with axum's `into_make_service_with_connect_info::<SocketAddr>()` \
                 or insert a `PeerAddr` request extension",
            );
            return Err(SourceIpRejection::NoPeerAddress);
        };
        let ip = client_ip(
            peer.ip(),
            request.headers(),
            &self.trusted_proxies,
            self.forwarded_header,
        )?;
        if !self.allowed.contains(ip) {
            return Err(SourceIpRejection::NotAllowed { ip });
        }
        request.extensions_mut().insert(ClientIp(ip));
        Ok(())
    }
}

impl<B> Check<B> for SourceIpCheck {
    type Body = B;
    type Refusal = SourceIpRejection;

    fn check(&self, mut request: Request<B>) -> Result<Request<B>, Refused<B, SourceIpRejection>> {
        let verdict = self.verdict(&mut request);
        Refused::before_body(request, verdict)
    }
}
