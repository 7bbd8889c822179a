//! The address of the connection a request came in on.
//!
//! Neither hyper nor tower records the peer address on a request: the server that accepts the
//! connection has to. Two request extensions are understood:
//!
//! - [`PeerAddr`], which any server can insert (see its example);
//! - axum's `ConnectInfo<SocketAddr>`, inserted by
//!   `Router::into_make_service_with_connect_info::<SocketAddr>()`, or its test double
//!   `MockConnectInfo<SocketAddr>` (with the `axum` feature, on by default).
//!
//! When several are present, [`PeerAddr`] wins, then `ConnectInfo`.

use std::net::IpAddr;

pub use polytomic_webhook_core::peer::{PeerAddr, peer_addr};

/// Request extension inserted by the source-IP allowlist on success: the client address it
/// checked, which is the peer's, or the one forwarded by trusted proxies.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use polytomic_webhook_auth::ClientIp;
///
/// let ip = ClientIp(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
/// assert_eq!(ip.0.to_string(), "192.0.2.7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);
