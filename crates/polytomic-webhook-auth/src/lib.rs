//! Tower middleware that authenticates [Polytomic] custom-webhook deliveries before their body
//! is read.
//!
//! Polytomic sends each delivery with two headers this crate checks:
//!
//! - `Authorization: Bearer <secret>`, where the secret is the static value entered when the
//!   webhook connection was set up;
//! - `Polytomic-Signature-Timestamp`, the RFC 3339 time the delivery was created.
//!
//! [`BearerAuthLayer`] compares the bearer token with one or more configured secrets in
//! constant time (several, so a secret can be rotated without downtime), checks that the
//! timestamp lies within a window around the current time, and records it as a
//! [`DeliveredAt`] request extension. [`SourceIpAllowlistLayer`] optionally admits only
//! requests from configured address blocks, such as Polytomic's published addresses.
//!
//! Both layers decide from the request head alone: a refused request's body is never decoded or
//! parsed, only drained (read and discarded within a byte budget and a deadline), so an
//! unauthenticated sender cannot make the server decompress or parse anything. Put them
//! outside any layer that reads the body:
//!
//! ```
//! use axum::{Router, routing::post};
//! use polytomic_webhook_auth::allowlist::{SourceIpAllowlistLayer, parse_block};
//! use polytomic_webhook_auth::{BearerAuthLayer, Secret, SecretSet};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secrets = SecretSet::try_from_iter(["current-secret", "previous-secret"])?;
//! let app: Router = Router::new()
//!     .route("/webhooks/polytomic", post(|| async { "ok" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             // Outermost first: the cheapest check that needs no secret.
//!             .layer(SourceIpAllowlistLayer::new([parse_block("203.0.113.0/24")?]))
//!             .layer(BearerAuthLayer::new(secrets)),
//!     );
//! # Ok(())
//! # }
//! ```
//!
//! Every refusal is an `application/problem+json` response (RFC 9457) with a stable `code`,
//! described on [`AuthRejection`] (bearer layer) and [`SourceIpRejection`] (allowlist), and a
//! `warn`-level `tracing` event naming the code and the peer address. Secrets and presented tokens never appear in responses, logs or `Debug`
//! output.
//!
//! Each layer is the core crate's `CheckService` running its check ([`SourceIpCheck`],
//! [`BearerCheck`]), the same checks that `PolytomicWebhookLayer` runs. A refused body is read
//! and discarded before the answer, within a byte budget and a deadline, as the composed layer
//! does with its defaults, so that an HTTP/1.1 client still sending it hears the answer; set
//! another [`DrainPolicy`] with [`drain`](BearerAuthLayer::drain) (the composed layer's own
//! limits, or `DrainPolicy::none()` to leave the body unread). Draining, like the body deadline,
//! uses tokio's timer: run the layers on a tokio runtime with its time driver enabled, as every
//! server runtime and `#[tokio::main]` have.
//!
//! The header parsers ([`authorization`], [`timestamp`], and the forwarding-header parsers in
//! [`allowlist`]) are public, pure functions returning typed errors.
//!
//! # Features
//!
//! - `axum` (default): also read the peer address from axum's `ConnectInfo<SocketAddr>`.
//!
//! [Polytomic]: https://www.polytomic.com/
//! [`SourceIpRejection`]: allowlist::SourceIpRejection

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod allowlist;
pub mod authorization;
pub mod bearer;
pub mod clock;
pub mod peer;
pub mod rejection;
pub mod secret;
pub mod signature;
pub mod timestamp;

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod proptests;

pub use allowlist::{SourceIpAllowlist, SourceIpAllowlistLayer, SourceIpCheck};
pub use bearer::{BearerAuth, BearerAuthConfig, BearerAuthLayer, BearerCheck};
pub use clock::{Clock, FixedClock, SystemClock};
pub use peer::{ClientIp, PeerAddr, peer_addr};
pub use polytomic_webhook_core::check::DrainPolicy;
pub use rejection::AuthRejection;
pub use secret::{InvalidSecret, Secret, SecretSet};
pub use signature::{
    Signature, SignatureEncoding, SignatureError, SignatureVerifier, SigningSecrets,
};
pub use timestamp::{DeliveredAt, TimestampWindow};
