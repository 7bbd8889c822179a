//! The address of the connection a request came in on.
//!
//! Neither hyper nor tower records the peer address on a request: the server that accepts the
//! connection has to. Two request extensions are understood:
//!
//! - [`PeerAddr`], which any server can insert (see its example);
//! - axum's `ConnectInfo<SocketAddr>`, inserted by
//!   `Router::into_make_service_with_connect_info::<SocketAddr>()`, or its test double
//!   `MockConnectInfo<SocketAddr>` (with the `axum` feature).
//!
//! When several are present, [`PeerAddr`] wins, then `ConnectInfo`. The auth crate's
//! allowlist checks this address; every refusal's log line names it.

use std::fmt;
use std::net::SocketAddr;

use http::Extensions;

/// Request extension carrying the address of the connection's remote end.
///
/// Insert it for every request when serving with plain hyper (or anything else that is not
/// axum's `into_make_service_with_connect_info`), by wrapping the application once per
/// accepted connection:
///
/// ```
/// use std::net::SocketAddr;
/// use http::Request;
/// use polytomic_webhook_core::peer::PeerAddr;
/// use tower::{Service, ServiceBuilder};
///
/// /// The application as served on one connection; `remote` is the address that
/// /// `TcpListener::accept` returned for it.
/// fn for_connection<S, B>(app: S, remote: SocketAddr) -> impl Service<Request<B>> + Clone
/// where
///     S: Service<Request<B>> + Clone,
/// {
///     ServiceBuilder::new()
///         .map_request(move |mut request: Request<B>| {
///             request.extensions_mut().insert(PeerAddr(remote));
///             request
///         })
///         .service(app)
/// }
/// // Then hand `TowerToHyperService::new(for_connection(app.clone(), remote))` (from
/// // hyper-util) to hyper's `serve_connection`.
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address recorded in `extensions`, if the server recorded one.
///
/// ```
/// use http::Extensions;
/// use polytomic_webhook_core::peer::{PeerAddr, peer_addr};
///
/// let mut extensions = Extensions::new();
/// assert_eq!(peer_addr(&extensions), None);
/// let addr = "192.0.2.7:4711".parse().unwrap();
/// extensions.insert(PeerAddr(addr));
/// assert_eq!(peer_addr(&extensions), Some(addr));
/// ```
pub fn peer_addr(extensions: &Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    {
        use axum::extract::ConnectInfo;
        use axum::extract::connect_info::MockConnectInfo;

        if let Some(ConnectInfo(addr)) = extensions.get::<ConnectInfo<SocketAddr>>() {
            return Some(*addr);
        }
        // axum's own `ConnectInfo` extractor falls back to this test double; so do we, so
        // applications can test their allowlist the way axum suggests.
        if let Some(MockConnectInfo(addr)) = extensions.get::<MockConnectInfo<SocketAddr>>() {
            return Some(*addr);
        }
    }
    None
}

/// Formats an optional peer address for logs: the address, or `unknown`.
pub(crate) struct DisplayPeer(pub(crate) Option<SocketAddr>);

impl fmt::Display for DisplayPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "axum")]
    #[test]
    fn reads_axum_connect_info_and_prefers_peer_addr() {
        let connect: SocketAddr = "198.51.100.1:1".parse().unwrap();
        let explicit: SocketAddr = "198.51.100.2:2".parse().unwrap();
        let mut extensions = Extensions::new();
        extensions.insert(axum::extract::ConnectInfo(connect));
        assert_eq!(peer_addr(&extensions), Some(connect));
        extensions.insert(PeerAddr(explicit));
        assert_eq!(peer_addr(&extensions), Some(explicit));
    }

    #[test]
    fn display_peer() {
        assert_eq!(DisplayPeer(None).to_string(), "unknown");
        let addr: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(DisplayPeer(Some(addr)).to_string(), "[2001:db8::1]:443");
    }
}
