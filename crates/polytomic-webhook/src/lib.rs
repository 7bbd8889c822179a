//! Receive [Polytomic](https://www.polytomic.com/) webhook deliveries in any tower stack.
//!
//! Polytomic syncs records to a custom webhook by POSTing `sync.records` batches: gzipped JSON,
//! a static `Authorization: Bearer <secret>`, and a `Polytomic-Signature-Timestamp`. Any 4xx or
//! 5xx answer marks the sync failed. This crate turns those requests into validated, typed
//! record batches with one layer and one extractor:
//!
//! ```
//! use axum::{Router, routing::post};
//! use polytomic_webhook::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Contact {
//!     email: String,
//! }
//!
//! async fn receive(batch: SyncRecords<Contact>) -> Ack {
//!     for record in &batch {
//!         let _ = (record.hash(), &record.fields().email);
//!     }
//!     Ack::from(&batch)
//! }
//!
//! let config = PolytomicWebhookConfig::default().secret(Secret::new("the-connection-secret")?);
//! let app: Router = Router::new()
//!     .route("/webhooks/polytomic", post(receive))
//!     .layer(PolytomicWebhookLayer::new(config)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the layer does, in order
//!
//! 1. Opens a `polytomic_webhook.delivery` tracing span (method, path; later the content
//!    coding, byte counts, sync id and name, record count, outcome, status and latency) and
//!    logs one event when the response is ready: `info` when accepted or ignored, `warn` when
//!    rejected. Neither the secret nor record contents are ever recorded.
//! 2. Optionally refuses senders outside an address allowlist (403).
//! 3. Checks the bearer secret in constant time, against every configured secret (rotation),
//!    and the timestamp against a freshness window (401).
//! 4. Gives the body a deadline (30 s by default; 408 when it passes) and decodes it as it
//!    streams (gzip, and `deflate`/`br`/`zstd` with their features), within limits (413, 415).
//! 5. Hands the request to your service with the extractor's configuration attached.
//!
//! The order is the point: headers are checked before any body byte is read, so a sender
//! without the secret can never make the server inflate or parse anything. Its unread body is
//! only read and discarded, within the compressed-size limit, before the refusal is sent over
//! HTTP/1.1: a server that answered and closed while the client was still sending would show
//! the client a reset connection instead of the answer. The
//! [`SyncRecords`](event::SyncRecords) extractor then parses and validates the envelope once,
//! and the handler runs only for a valid batch.
//!
//! Every refusal is `application/problem+json` (RFC 9457) with a stable `code`; see
//! [every answer](guide::answers). Unknown event types are acknowledged with 200 by default, since Polytomic
//! asks receivers to ignore what they do not know.
//!
//! # The organisation Events webhook
//!
//! Polytomic's second kind of webhook reports sync runs (`sync.completed`, `sync.failed`, …),
//! one event per delivery, signed with an HMAC of the body in `Polytomic-Signature` instead of a
//! bearer token, and retried when not answered 2xx. [`PolytomicOrgEventsLayer`] checks the
//! signature (see [`events`] for the order of its checks), the
//! [`PolytomicOrgEvent`](event::org::PolytomicOrgEvent) extractor types the event, and
//! [`dedup::DedupLayer`] lets each event id reach the handler once.
//!
//! # Without axum
//!
//! The layer is generic over request and response bodies and never boxes the inner service,
//! so it fits tonic's and hyper's stacks too; there, [`event::read`] does the extractor's work
//! on the request the layer passes on.
//!
//! # Guides
//!
//! The [`guide`] modules hold what spans many items: [record types](guide::records), [the
//! Events webhook](guide::events) (signature, dedup), [configuration](guide::configuration),
//! [every answer](guide::answers), [metrics and logs](guide::metrics), and [the security
//! model and server-wide bounds](guide::security).
//!
//! # Crates
//!
//! This crate re-exports the pieces: [`auth`], [`check`], [`decompression`], [`event`] and
//! [`problem`].
//! For running a receiver it adds [`metrics`] (what the layer emits, and a Prometheus recorder
//! with the `prometheus` feature), [`limit`] (bounds on the whole server: deliveries and
//! decoded bytes in flight) and [`readiness`] (a probe for a `/readyz` route).
//! Cargo features `gzip` (default), `deflate`, `br` and `zstd` choose the codings; `axum`
//! (default) lets the allowlist read axum's `ConnectInfo`; `prometheus` adds the Prometheus
//! recorder; `server` adds the
// Linked only when it is built: without the feature the link would not resolve.
#![cfg_attr(feature = "server", doc = "[`server`] module,")]
#![cfg_attr(not(feature = "server"), doc = "`server` module,")]
//! a hyper server loop with connection deadlines and bounds and graceful shutdown; `testing` adds the
#![cfg_attr(feature = "testing", doc = "[`testing`] module,")]
#![cfg_attr(not(feature = "testing"), doc = "`testing` module,")]
//! a builder for Polytomic-shaped deliveries (and hostile ones) to test handlers with.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The crate's README, shown on crates.io: its snippet is compiled here.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Guides: what the API reference does not say in one place. Every snippet in them is a
/// doctest, and each compiles as pasted into a new project with the dependencies it names.
pub mod guide {
    #[doc = include_str!("../docs/records.md")]
    pub mod records {}
    #[doc = include_str!("../docs/events.md")]
    pub mod events {}
    #[doc = include_str!("../docs/configuration.md")]
    pub mod configuration {}
    #[doc = include_str!("../docs/answers.md")]
    pub mod answers {}
    #[doc = include_str!("../docs/metrics.md")]
    pub mod metrics {}
    #[doc = include_str!("../docs/security.md")]
    pub mod security {}
}

mod config;
pub mod dedup;
mod drain;
pub mod events;
mod future;
mod layer;
pub mod limit;
pub mod metrics;
mod panic;
pub mod readiness;
mod service;
mod timeout;

#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use config::{ConfigError, PolytomicWebhookConfig};
pub use events::{
    EventBody, EventsFuture, PolytomicOrgEvents, PolytomicOrgEventsConfig, PolytomicOrgEventsLayer,
};
pub use future::DeliveryFuture;
pub use layer::PolytomicWebhookLayer;
pub use panic::handler_panicked;
pub use polytomic_webhook_core::response::ResponseBody;
pub use service::{DeliveryBody, PolytomicWebhook};
pub use timeout::TimeoutBody;

// The modules below name each item they re-export: everything here is this crate's semver
// surface, so an item a sub-crate adds is not published by accident. A stage crate's other
// items remain available from that crate.

/// Bearer secrets, the timestamp window and the source-IP allowlist
/// (the `polytomic-webhook-auth` crate).
pub mod auth {
    pub use polytomic_webhook_auth::{
        AuthRejection, BearerAuth, BearerAuthConfig, BearerAuthLayer, BearerCheck, ClientIp, Clock,
        DeliveredAt, DrainPolicy, FixedClock, InvalidSecret, PeerAddr, Secret, SecretSet,
        Signature, SignatureEncoding, SignatureError, SigningSecrets, SourceIpAllowlist,
        SourceIpAllowlistLayer, SourceIpCheck, SystemClock, TimestampWindow, allowlist,
        authorization, peer_addr, signature, timestamp,
    };
}

/// Bounded, streaming request decompression (the `polytomic-webhook-decompression` crate).
pub mod decompression {
    pub use polytomic_webhook_decompression::{
        Coding, Codings, Decompression, DecompressionBody, DecompressionConfig, DecompressionInfo,
        DecompressionLayer, DecompressionRejection, MAX_STACKED_CODINGS, ResponseFuture,
        UnsupportedContentEncoding,
    };
}

/// The typed `PolytomicEvent` / `SyncRecords` extractor, [`read`](event::read) for any
/// `http::Request`, and the parser (the `polytomic-webhook-event` crate).
pub mod event {
    pub use polytomic_webhook_event::{
        Ack, BatchObserver, BatchSummary, EventConfig, EventRejection, Fields, FieldsError,
        InvalidSyncId, NotStored, PolytomicEvent, RawFields, RawJson, Record, RecordHash,
        SYNC_RECORDS, SyncId, SyncRecords, UnknownEventPolicy, WithoutLayer, normalize_field_name,
        org, parse, parse_sync_records, read, read_event, read_event_without_layer,
        read_without_layer, rejection,
    };
    // The organisation Events webhook's types, also under `org`.
    pub use polytomic_webhook_event::{
        CompletionCounts, OrgEventType, PolytomicOrgEvent, RawPayload, parse_org_event,
    };
}

/// The check trait every stage is built from: write your own head check and run it with
/// [`CheckService`](check::CheckService), answered and drained as the stages are
/// (the `polytomic-webhook-core` crate's `check` module).
pub mod check {
    pub use polytomic_webhook_core::check::{
        Check, CheckFuture, CheckService, DrainPolicy, Refused,
    };
}

/// RFC 9457 problem details and the shared body-error vocabulary
/// (the `polytomic-webhook-core` crate).
pub mod problem {
    pub use polytomic_webhook_core::body::{BodyLimit, BodyStats, TooLargeLimit};
    pub use polytomic_webhook_core::{PROBLEM_JSON, Problem, ProblemCode, Rejection};
}

/// What a typical receiver needs in scope.
///
/// ```
/// use polytomic_webhook::prelude::*;
///
/// let _config = PolytomicWebhookConfig::default().secret(Secret::new("s")?);
/// // A record's fields as the default `SyncRecords` hands them over: the received JSON text.
/// let fields: RawFields = r#"{"seats": 3}"#.parse().expect("valid JSON");
/// let seats: Result<std::collections::HashMap<String, u32>, FieldsError> = fields.deserialize_as();
/// assert_eq!(seats.expect("a map of numbers")["seats"], 3);
/// let any: RawJson = "[1, 2]".parse().expect("valid JSON");
/// assert_eq!(any.as_str(), "[1, 2]");
/// # Ok::<(), InvalidSecret>(())
/// ```
pub mod prelude {
    pub use crate::auth::SigningSecrets;
    pub use crate::auth::{DeliveredAt, InvalidSecret, Secret, SecretSet, TimestampWindow};
    pub use crate::event::org::{CompletionCounts, OrgEventType, PolytomicOrgEvent, RawPayload};
    pub use crate::event::{
        Ack, EventConfig, Fields, FieldsError, NotStored, PolytomicEvent, RawFields, RawJson,
        Record, SyncRecords, UnknownEventPolicy,
    };
    pub use crate::{
        PolytomicOrgEventsConfig, PolytomicOrgEventsLayer, PolytomicWebhookConfig,
        PolytomicWebhookLayer,
    };
}
