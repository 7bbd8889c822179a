//! A typed extractor for Polytomic custom-webhook deliveries.
//!
//! Polytomic's custom webhooks `POST` batches of synced records as JSON:
//!
//! ```json
//! {
//!   "event": "sync.records",
//!   "object": {
//!     "id": "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
//!     "name": "Webhook HTTP Endpoint sync",
//!     "records": [
//!       {"hash": "b7421c6c57bd49f7",
//!        "fields": {"email": "nathan@polytomic.com", "last_login": "2020-12-02T00:00:00Z"}}
//!     ],
//!     "metadata": {}
//!   }
//! }
//! ```
//!
//! This crate turns such a body into [`SyncRecords<T>`], where `T` is your record type (or the
//! dynamic [`Fields`] map), and refuses anything else with a precise
//! `application/problem+json` answer (see [`rejection`]). It depends on `axum-core` only; the
//! extractors work in any axum router, [`read`] / [`read_event`] do the same job on any
//! `http::Request` (hyper, tonic, a tower `service_fn`), and [`parse`] / [`parse_sync_records`]
//! on a body already in memory.
//!
//! # Extractors
//!
//! - [`SyncRecords<T>`]: the handler runs only for a valid `sync.records` batch. For an event
//!   type this crate does not know, the handler does not run and the configured
//!   [`UnknownEventPolicy`] answers: by default 200 `{"ignored_event":"<name>"}` (Polytomic asks
//!   receivers to act only on events they know, and would mark the sync failed on a 4xx).
//! - [`PolytomicEvent<T>`]: every event, known or not; unknown ones arrive as
//!   [`PolytomicEvent::Unknown`].
//! - [`PolytomicOrgEvent<T>`](org::PolytomicOrgEvent): an event of the organisation Events
//!   webhook (sync runs starting, failing, completing), a different envelope; see [`org`].
//!
//! The extractors parse only what the composed layer of the `polytomic-webhook` crate
//! (`PolytomicWebhookLayer`, or `PolytomicOrgEventsLayer` for the Events webhook) admitted: a
//! request that reached them any other way, such as through a router whose `.layer(...)` was
//! written before the `.route(...)` it was meant to wrap, is refused with 500 `layer_missing`
//! and an `error` log line that says how to fix the router. A pipeline that authenticates by
//! itself says so with [`WithoutLayer`], [`read_without_layer`] or
//! [`read_event_without_layer`].
//!
//! ```
//! use axum::{Router, routing::post};
//! use chrono::{DateTime, Utc};
//! use polytomic_webhook_event::{Ack, SyncRecords, WithoutLayer};
//!
//! #[derive(serde::Deserialize)]
//! struct User {
//!     email: String,
//!     last_login: DateTime<Utc>,
//! }
//!
//! async fn receive(batch: SyncRecords<User>) -> Ack {
//!     for record in &batch {
//!         let user = record.fields();
//!         println!("{} ({}) last logged in at {}", user.email, record.hash(), user.last_login);
//!     }
//!     Ack::from(&batch)
//! }
//!
//! // Without the layer, the extractor refuses every request.
//! let unwrapped: Router = Router::new().route("/polytomic", post(receive));
//! // A route that has authenticated the request by other means parses it on purpose.
//! let explicit: Router = Router::new().route(
//!     "/polytomic",
//!     post(|WithoutLayer(batch): WithoutLayer<SyncRecords<User>>| receive(batch)),
//! );
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! # use tower::ServiceExt;
//! # let body = r#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
//! #   "name":"Users","records":[{"hash":"b7421c6c57bd49f7",
//! #   "fields":{"email":"nathan@polytomic.com","last_login":"2020-12-02T00:00:00Z"}}]}}"#;
//! # let request = || http::Request::post("/polytomic")
//! #     .header("content-type", "application/json")
//! #     .body(axum::body::Body::from(body))
//! #     .unwrap();
//! let response = unwrapped.oneshot(request()).await.unwrap();
//! assert_eq!(response.status(), 500); // code: layer_missing
//! let response = explicit.oneshot(request()).await.unwrap();
//! assert_eq!(response.status(), 200); // body: {"accepted":1}
//! # });
//! ```
//!
//! # What is checked
//!
//! - `Content-Type` is `application/json` or `application/*+json` (else 415).
//! - The body fits every limit: axum's `DefaultBodyLimit`, honoured exactly as axum's own
//!   extractors do; the decompression layer's limits, whose [`BodyStats`] extension tells which
//!   fired; and [`EventConfig::max_body_bytes`] (else 413 `body_too_large`).
//! - The body is JSON, with objects and arrays nested at most [`EventConfig::max_depth`] deep
//!   anywhere in it (else 400 `invalid_json` with line and column), and a valid envelope
//!   (else 422 `invalid_envelope` with the JSON `path` of the first problem). The sync id is a
//!   UUID unless [`EventConfig::require_uuid_sync_id`] is off; `metadata` may be absent or
//!   `null` but otherwise must be an object; every record needs `hash` and an object `fields`.
//!   Keys this crate does not know are ignored at every level, so Polytomic can add some.
//! - Each record's `fields` deserializes into `T` (else 422 `invalid_record_fields` with the
//!   path inside the record, e.g. `object.records[3].fields.email`).
//! - There are at most [`EventConfig::max_records`] records, counted while parsing, so an
//!   oversized batch is refused before it is built (else 413 `too_many_records`). An empty batch
//!   is valid.
//!
//! # Cost
//!
//! The body is buffered once and parsed in a single `serde_json` pass into the final types,
//! with no intermediate `Value` and no path bookkeeping. Only when that pass fails is the body
//! examined again (and `T` re-run under `serde_path_to_error`) to say where the problem is.
//!
//! # Field-name normalisation
//!
//! Polytomic removes from field names every character other than letters, digits, `_`, `-`
//! and `.`, unless the sync turns that off. With [`EventConfig::normalize_field_names`] on, the
//! extractor applies the same rule ([`normalize_field_name`]) to each record's field names
//! before `T` sees them, so handlers get the same names whichever way the sync is set up. Two
//! names that normalise alike are refused (422 `field_name_collision`) rather than merged.
//!
//! # Configuration
//!
//! [`EventConfig`] is read from the request's extensions (the composed layer inserts it). A
//! request without one (read through [`WithoutLayer`] or [`read_without_layer`]) is read under
//! `EventConfig::default()`.
//!
//! [`BodyStats`]: polytomic_webhook_core::body::BodyStats

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod ack;
mod admitted;
mod budget;
mod config;
mod de;
mod event;
mod extract;
mod normalize;
mod numbers;
pub mod org;
mod parse;
mod raw;
mod read;
pub mod rejection;
mod sanitize;
#[cfg(feature = "proptest")]
pub mod strategy;

pub use ack::{Ack, NotStored, Stored};
pub use config::{EventConfig, UnknownEventPolicy};
// Test hooks, outside the API: only the `testing` feature (which the crate's own tests turn
// on) exports them.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use de::tracked_parses;
pub use event::{
    Fields, InvalidSyncId, PolytomicEvent, Record, RecordHash, SYNC_RECORDS, SyncId, SyncRecords,
};
pub use extract::WithoutLayer;
pub use normalize::normalize_field_name;
pub use org::{
    CompletionCounts, OrgEventType, PolytomicOrgEvent, RawPayload, VerifiedOrgEvent,
    parse_org_event,
};
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use parse::slow_path_runs;
pub use parse::{parse, parse_sync_records};
pub use raw::{FieldsError, RawFields, RawJson};
pub use read::{
    BatchObserver, BatchSummary, read, read_event, read_event_without_layer, read_without_layer,
};

/// Cross-crate internals for the `polytomic-webhook` crate's layers, in the manner of
/// axum-core's own: not part of the API, and not to be called by other code, since a request
/// marked here reaches the extractors as if the layer had authenticated it.
#[doc(hidden)]
pub mod __private {
    pub use crate::admitted::{admit_batch, admit_org_event, admitted_by_org_events_layer};
}
pub use rejection::EventRejection;
