//! Middleware that checks a delivery's bearer secret and timestamp before anything else.
//!
//! [`BearerAuthLayer`] wraps a service in [`BearerAuth`]. For each request it:
//!
//! 1. reads the single `Authorization` header and extracts the bearer token (see
//!    [`authorization`](crate::authorization) for the exact rules);
//! 2. compares the token with every configured secret in constant time (see
//!    [`secret`](crate::secret) for why neither content nor length leaks);
//! 3. reads `Polytomic-Signature-Timestamp`, checks it against the
//!    [`TimestampWindow`](crate::TimestampWindow) using the injected [`Clock`](crate::Clock),
//!    and inserts it as a [`DeliveredAt`](crate::DeliveredAt) request extension;
//! 4. calls the inner service.
//!
//! When a step fails the inner service is not called and the request body is not decoded or
//! parsed, only drained as [`DrainPolicy`](crate::DrainPolicy) says: the
//! response is a `401` problem with a `WWW-Authenticate: Bearer realm="polytomic-webhook"`
//! challenge (carrying `error="invalid_token"` when a token was presented but refused), and a
//! `warn`-level `tracing` event records the problem code and the peer address. The token is
//! never logged.
//!
//! | problem `code` | cause |
//! |---|---|
//! | `missing_authorization` | no `Authorization` header |
//! | `unsupported_authorization_scheme` | a scheme other than `Bearer` |
//! | `invalid_token` | empty token, non-ASCII header, two headers, or no secret matches |
//! | `missing_timestamp` | no timestamp header while one is required |
//! | `malformed_timestamp` | not one RFC 3339 date-time |
//! | `timestamp_too_old` | older than `max_age` (default 5 minutes) |
//! | `timestamp_in_future` | ahead by more than `max_future_skew` (default 1 minute) |
//!
//! The timestamp is only checked once the token has matched, so an unauthenticated sender
//! learns nothing about the window. Remember that the timestamp is not signed: the window
//! guards against stale and replayed deliveries, not against someone who holds the secret.
//!
//! # In an axum `Router`
//!
//! ```
//! use axum::{Router, routing::post};
//! use polytomic_webhook_auth::{BearerAuthLayer, Secret, SecretSet};
//!
//! # fn main() -> Result<(), polytomic_webhook_auth::InvalidSecret> {
//! // Read the secret from your configuration; never hard-code it.
//! # let secret_from_env = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig";
//! let secrets = SecretSet::new(Secret::new(secret_from_env)?);
//!
//! let app: Router = Router::new()
//!     .route("/webhooks/polytomic", post(|| async { "ok" }))
//!     .layer(BearerAuthLayer::new(secrets));
//! # Ok(())
//! # }
//! ```
//!
//! # In a `tower::ServiceBuilder`, with rotation and an injected clock
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use chrono::{TimeZone, Utc};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Empty;
//! use polytomic_webhook_auth::{
//!     BearerAuthLayer, DeliveredAt, FixedClock, Secret, SecretSet, TimestampWindow,
//! };
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // During a rotation both the old and the new secret are accepted.
//! let secrets = SecretSet::new(Secret::new("old-secret")?).with(Secret::new("new-secret")?);
//! let now = Utc.with_ymd_and_hms(2021, 6, 1, 22, 57, 0).unwrap();
//!
//! let service = ServiceBuilder::new()
//!     .layer(
//!         BearerAuthLayer::new(secrets)
//!             .timestamp_window(Some(TimestampWindow::new(
//!                 Duration::from_secs(120),
//!                 Duration::from_secs(30),
//!             )))
//!             .clock(FixedClock(now)),
//!     )
//!     .service(service_fn(|request: Request<Empty<Bytes>>| async move {
//!         // The parsed timestamp travels with the request.
//!         let delivered = request.extensions().get::<DeliveredAt>().copied();
//!         assert_eq!(delivered.map(|DeliveredAt(at)| at.timestamp()), Some(1_622_588_136));
//!         Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
//!     }));
//!
//! let request = Request::post("/")
//!     .header("authorization", "Bearer new-secret")
//!     .header("polytomic-signature-timestamp", "2021-06-01T22:55:36Z")
//!     .body(Empty::new())?;
//! let response = service.clone().oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let request = Request::post("/")
//!     .header("authorization", "Bearer wrong")
//!     .header("polytomic-signature-timestamp", "2021-06-01T22:55:36Z")
//!     .body(Empty::new())?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(
//!     response.headers()["www-authenticate"],
//!     r#"Bearer realm="polytomic-webhook", error="invalid_token""#,
//! );
//! # Ok(())
//! # }
//! ```

mod layer;
mod service;

pub use layer::{BearerAuthConfig, BearerAuthLayer};
pub use polytomic_webhook_core::check::CheckFuture;
pub use polytomic_webhook_core::response::{ResponseBody, ResponseFuture};
pub use service::{BearerAuth, BearerCheck};

#[cfg(test)]
mod tests;
