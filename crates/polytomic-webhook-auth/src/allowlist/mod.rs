//! Middleware that admits only requests from configured address blocks.
//!
//! Polytomic sends deliveries from a published set of addresses. [`SourceIpAllowlistLayer`]
//! refuses (`403`, code `source_ip_not_allowed`) every request whose client address is outside
//! the blocks you configure; no list is built in, because Polytomic's changes, so pass the
//! current one from your configuration. It complements the bearer secret, it does not replace
//! it.
//!
//! # Where the address comes from
//!
//! The client address is the connection's peer address, which the server must record on each
//! request (see [`peer`](crate::peer)): axum's `ConnectInfo<SocketAddr>` from
//! `into_make_service_with_connect_info::<SocketAddr>()`, or a [`PeerAddr`](crate::PeerAddr)
//! extension. **Without either, every request is refused** and a `warn` event says that the
//! server did not provide the peer address: failing open would silently disable the check.
//!
//! Behind reverse proxies the peer is the proxy. List the proxies with
//! [`SourceIpAllowlistLayer::trusted_proxies`]: when the peer is one of them, the client
//! address is read from the one header they write ([`ForwardedHeader`]: `X-Forwarded-For` by
//! default, or `Forwarded`, RFC 7239 `for=`), walking from the rightmost entry leftwards past
//! trusted proxies (see [`parse_forwarded_element`] for the details). The other header is
//! ignored: a proxy passes a header it does not write through from the sender untouched.
//! Forwarding headers from any other peer are ignored, as anyone can write them.
//!
//! The header is read as a whole, all its lines, before any entry is believed. If any part of
//! it is malformed (a quoted string left open, an escape with nothing after it, a pair without
//! `=`, a repeated `for`, something that is not a node, or any non-address in
//! `X-Forwarded-For`), the request is refused: a sender could otherwise leave a quote open so
//! that the `, for=…` its proxy appends to the same line becomes part of the sender's own
//! value. An entry that is well-formed but names no address (`unknown`, an obfuscated name)
//! refuses the request only where the walk needs it.
//!
//! IPv4 addresses and their IPv4-mapped IPv6 forms (`::ffff:203.0.113.7`, as reported by
//! dual-stack listeners) match the same blocks. On success the checked address is inserted as
//! a [`ClientIp`](crate::ClientIp) request extension.
//!
//! Place this layer outside the bearer layer, so refused addresses never reach the secret
//! comparison.
//!
//! # Example
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use axum::{Router, routing::post};
//! use polytomic_webhook_auth::allowlist::{SourceIpAllowlistLayer, parse_block};
//! use polytomic_webhook_auth::{BearerAuthLayer, Secret};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Use the addresses Polytomic currently publishes; these are documentation ranges.
//! let polytomic = ["203.0.113.10", "203.0.113.11", "2001:db8:7::/48"]
//!     .into_iter()
//!     .map(parse_block)
//!     .collect::<Result<Vec<_>, _>>()?;
//!
//! let app = Router::new()
//!     .route("/webhooks/polytomic", post(|| async { "ok" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(SourceIpAllowlistLayer::new(polytomic))
//!             .layer(BearerAuthLayer::new(Secret::new(std::env::var("POLYTOMIC_SECRET")?)?)),
//!     );
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//! // `with_connect_info` records each connection's peer address for the allowlist.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(())
//! # }
//! ```

mod forwarded;
mod layer;
mod net;
mod rejection;
mod service;

pub use forwarded::{
    ForwardedHeader, MAX_HOPS, X_FORWARDED_FOR, parse_forwarded_element, parse_node,
};
pub use layer::{AllowlistConfig, SourceIpAllowlistLayer};
pub use net::{InvalidBlock, IpNet, parse_block};
pub use rejection::SourceIpRejection;
pub use service::{SourceIpAllowlist, SourceIpCheck};

#[cfg(test)]
mod tests;
