//! Build Polytomic-shaped deliveries in tests (feature `testing`).
//!
//! Getting a delivery right by hand means gzip, a bearer secret, a fresh RFC 3339 timestamp,
//! the `sync.records` envelope and a hash per record. [`Delivery`] does all of it and hands
//! back an [`http::Request`] that goes straight into an axum `Router` or any tower service
//! with `tower::ServiceExt::oneshot`:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, http::StatusCode, routing::post};
//! use polytomic_webhook::prelude::*;
//! use polytomic_webhook::testing::Delivery;
//! use tower::ServiceExt;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Contact {
//!     email: String,
//! }
//!
//! async fn receive(batch: SyncRecords<Contact>) -> Ack {
//!     Ack::from(&batch)
//! }
//!
//! let config = PolytomicWebhookConfig::default().secret(Secret::new("test-secret")?);
//! let app = Router::new()
//!     .route("/webhooks/polytomic", post(receive))
//!     .layer(PolytomicWebhookLayer::new(config)?);
//!
//! let request = Delivery::new()
//!     .uri("/webhooks/polytomic")
//!     .secret("test-secret")
//!     .record(&Contact { email: "a@example.com".into() })
//!     .build();
//! let response = app.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```
//!
//! # Hostile requests
//!
//! To check that a deployment refuses what it should, start from a valid delivery and spoil
//! one thing. With the layer's default configuration the answers are:
//!
//! | helper | status | `code` |
//! | --- | --- | --- |
//! | [`Delivery::wrong_secret`] | 401 | `invalid_token` |
//! | [`Delivery::stale_timestamp`] | 401 | `timestamp_too_old` |
//! | [`Delivery::bomb`] | 413 | `body_too_large` (the ratio limit, `"limit": "ratio"`) |
//! | [`Delivery::malformed_json`] | 400 | `invalid_json` |
//! | [`Delivery::event`] with an unknown name | 200, handler not called | — |
//!
//! For the organisation Events route, [`EventDelivery`] builds signed events; behind
//! [`PolytomicOrgEventsLayer`](crate::PolytomicOrgEventsLayer) with its defaults:
//!
//! | helper | status | `code` |
//! | --- | --- | --- |
//! | an [`EventDelivery`] without [`EventDelivery::secret`] | 401 | `missing_signature` |
//! | [`EventDelivery::tamper`] | 401 | `invalid_signature` |
//! | [`EventDelivery::bomb`] | 413 | `body_too_large` |
//! | [`EventDelivery::malformed_json`] | 400 | `invalid_json` |
//!
//! # Record hashes
//!
//! Polytomic does not publish how it computes a record's `hash`. Unless a test gives one
//! ([`Delivery::record_with_hash`]), the builder derives one with [`record_hash`]: the first
//! eight bytes of the SHA-256 of the fields' canonical JSON, as 16 hex digits. It is
//! deterministic (equal fields, equal hash) but it is **not** Polytomic's algorithm: never
//! compare it with hashes Polytomic sent.

pub mod event_ids;

use std::io::Write;

use axum_core::body::Body;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, USER_AGENT,
};
use http::{HeaderMap, Method, Request};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::auth::signature::SignatureEncoding;
use crate::auth::timestamp::SIGNATURE_TIMESTAMP;
use crate::event::{RawFields, RawJson, SYNC_RECORDS, SyncRecords};

/// The sync id a [`Delivery`] carries unless given another (the one on Polytomic's sample).
pub const SAMPLE_SYNC_ID: &str = "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7";

/// The sync name a [`Delivery`] carries unless given another.
pub const SAMPLE_SYNC_NAME: &str = "Webhook HTTP Endpoint sync";

/// How a [`Delivery`] puts its JSON on the wire.
///
/// ```
/// use polytomic_webhook::testing::{BodyForm, Delivery};
///
/// let request = Delivery::new().form(BodyForm::Identity).build();
/// assert!(request.headers().get("content-encoding").is_none());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyForm {
    /// Gzip, declared with `Content-Encoding: gzip`.
    #[default]
    Gzip,
    /// Gzip without `Content-Encoding`, as in the sample request on Polytomic's page.
    GzipWithoutHeader,
    /// Plain JSON.
    Identity,
}

#[derive(Clone, Debug)]
enum Timestamp {
    Now,
    At(DateTime<Utc>),
    Omitted,
}

/// A builder for one Polytomic delivery; see the [module docs](self).
///
/// Defaults: `POST /`, event `sync.records`, sync [`SAMPLE_SYNC_ID`] named
/// [`SAMPLE_SYNC_NAME`], no records, no metadata, no `Authorization` header until
/// [`secret`](Self::secret) is called, the current time as timestamp, and [`BodyForm::Gzip`].
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use polytomic_webhook::testing::{BodyForm, Delivery};
///
/// let (headers, body) = Delivery::new()
///     .secret("s3cret")
///     .sync("0b7c5a3e-6f7d-4a43-8f0e-1f8a2c9d4e51", "Contacts")
///     .record_json(serde_json::json!({"email": "a@example.com"}))
///     .metadata("team", "growth")
///     .timestamp(Utc.with_ymd_and_hms(2021, 6, 1, 22, 55, 36).unwrap())
///     .form(BodyForm::Identity)
///     .encode();
/// assert_eq!(headers["authorization"], "Bearer s3cret");
/// assert_eq!(headers["polytomic-signature-timestamp"], "2021-06-01T22:55:36Z");
/// let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(json["object"]["name"], "Contacts");
/// assert_eq!(json["object"]["metadata"]["team"], "growth");
/// assert_eq!(json["object"]["records"][0]["hash"].as_str().unwrap().len(), 16);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Delivery {
    uri: String,
    event: String,
    sync_id: String,
    sync_name: String,
    records: Vec<(Option<String>, Json)>,
    metadata: Map<String, Value>,
    secret: Option<String>,
    timestamp: Timestamp,
    form: BodyForm,
    user_agent: String,
    raw_json: Option<Bytes>,
    bomb: Option<Bytes>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self::new()
    }
}

impl Delivery {
    /// An empty `sync.records` delivery with the defaults listed on [`Delivery`].
    pub fn new() -> Self {
        Self {
            uri: "/".to_owned(),
            event: SYNC_RECORDS.to_owned(),
            sync_id: SAMPLE_SYNC_ID.to_owned(),
            sync_name: SAMPLE_SYNC_NAME.to_owned(),
            records: Vec::new(),
            metadata: Map::new(),
            secret: None,
            timestamp: Timestamp::Now,
            form: BodyForm::Gzip,
            user_agent: concat!("polytomic-webhook-testing/", env!("CARGO_PKG_VERSION")).to_owned(),
            raw_json: None,
            bomb: None,
        }
    }

    /// A delivery carrying `batch` as it is: id, name, records with their hashes, metadata.
    ///
    /// # Panics
    ///
    /// If a record's fields cannot be serialized to JSON (see [`record`](Self::record)).
    pub fn from_batch<T: Serialize>(batch: &SyncRecords<T>) -> Self {
        let mut delivery = Self::new().sync(batch.id().as_str(), batch.name());
        delivery.metadata = batch.metadata().deserialize_as().unwrap_or_default();
        for record in batch {
            delivery = delivery.record_with_hash(record.hash().as_str(), to_json(record.fields()));
        }
        delivery
    }

    /// The request path (and query); default `/`.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    /// The sync's id and name.
    pub fn sync(mut self, id: impl Into<String>, name: impl Into<String>) -> Self {
        self.sync_id = id.into();
        self.sync_name = name.into();
        self
    }

    /// Adds a record whose fields are `fields` serialized to JSON, with a derived hash.
    ///
    /// # Panics
    ///
    /// If `fields` cannot be serialized to JSON (a map with non-string keys, say): in a test
    /// that is a bug of the test.
    pub fn record<T: Serialize + ?Sized>(self, fields: &T) -> Self {
        self.record_json(to_json(fields))
    }

    /// Adds a record whose fields are the JSON value `fields`, with a derived hash.
    pub fn record_json(mut self, fields: Value) -> Self {
        self.records.push((None, Json::Value(fields)));
        self
    }

    /// Adds a record whose fields are sent as their text, byte for byte (numbers no float
    /// holds included), with a hash derived from that text made compact
    /// ([`RawFields::compact`]): unlike [`record_json`](Self::record_json)'s, it depends on the
    /// order of the names.
    ///
    /// ```
    /// use polytomic_webhook::prelude::RawFields;
    /// use polytomic_webhook::testing::{BodyForm, Delivery};
    ///
    /// let fields: RawFields = r#"{"id": 123456789012345678901234567890}"#.parse()?;
    /// let (_, body) = Delivery::new().form(BodyForm::Identity).record_raw(fields).encode();
    /// let body = String::from_utf8(body.to_vec())?;
    /// assert!(body.contains(r#""fields":{"id": 123456789012345678901234567890}"#), "{body}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record_raw(mut self, fields: RawFields) -> Self {
        self.records.push((None, Json::Fields(fields)));
        self
    }

    /// Adds a record with the given hash.
    pub fn record_with_hash(mut self, hash: impl Into<String>, fields: Value) -> Self {
        self.records.push((Some(hash.into()), Json::Value(fields)));
        self
    }

    /// Adds records from typed values; see [`record`](Self::record).
    ///
    /// # Panics
    ///
    /// As [`record`](Self::record).
    pub fn records<T: Serialize>(self, records: impl IntoIterator<Item = T>) -> Self {
        records
            .into_iter()
            .fold(self, |delivery, fields| delivery.record(&fields))
    }

    /// Adds one key-value pair of sync metadata.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sends `Authorization: Bearer <secret>`.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Sets `Polytomic-Signature-Timestamp` to `at` instead of the time of building.
    pub fn timestamp(mut self, at: DateTime<Utc>) -> Self {
        self.timestamp = Timestamp::At(at);
        self
    }

    /// Sends no `Polytomic-Signature-Timestamp` header.
    pub fn without_timestamp(mut self) -> Self {
        self.timestamp = Timestamp::Omitted;
        self
    }

    /// How the body is encoded; default [`BodyForm::Gzip`].
    pub fn form(mut self, form: BodyForm) -> Self {
        self.form = form;
        self
    }

    /// The `event` name; anything but `sync.records` is an event the receiver should ignore.
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.event = event.into();
        self
    }

    /// The `User-Agent` header; default `polytomic-webhook-testing/<version>`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Presents a secret other than the one set (expected: 401 `invalid_token`).
    pub fn wrong_secret(mut self) -> Self {
        let secret = self.secret.take().unwrap_or_default();
        self.secret = Some(format!("{secret}-but-wrong"));
        self
    }

    /// Dates the delivery an hour ago, outside the default five-minute window
    /// (expected: 401 `timestamp_too_old`).
    pub fn stale_timestamp(self) -> Self {
        self.timestamp(Utc::now() - TimeDelta::hours(1))
    }

    /// Replaces the body with a gzip bomb: `decoded_len` zero bytes
    /// (expected with the default limits: 413 `body_too_large`).
    ///
    /// The bomb is compressed as it is generated, so building even a gigabyte one holds only
    /// its compressed form (about a thousandth of its size) in memory. It is gzip whatever the
    /// [`form`](Self::form); [`BodyForm::GzipWithoutHeader`] leaves out `Content-Encoding`.
    pub fn bomb(mut self, decoded_len: u64) -> Self {
        self.bomb = Some(gzip_bomb(decoded_len));
        self
    }

    /// Replaces the JSON with a truncated document (expected: 400 `invalid_json`).
    pub fn malformed_json(self) -> Self {
        self.raw_json(&br#"{"event":"sync.records","object":{"id":"#[..])
    }

    /// Replaces the JSON with `json` as it is; it is still encoded in the chosen form.
    pub fn raw_json(mut self, json: &[u8]) -> Self {
        self.raw_json = Some(Bytes::copy_from_slice(json));
        self
    }

    /// The headers and body bytes of the delivery, ready for any HTTP client.
    ///
    /// The headers are the ones Polytomic sends: `Content-Type: application/json`,
    /// `Accept-Encoding: gzip`, `Authorization`, `Polytomic-Signature-Timestamp`,
    /// `User-Agent`, and `Content-Encoding: gzip` for [`BodyForm::Gzip`].
    pub fn encode(self) -> (HeaderMap, Bytes) {
        let form = match (&self.bomb, self.form) {
            (Some(_), BodyForm::Identity) => BodyForm::Gzip,
            (_, form) => form,
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        if form == BodyForm::Gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(secret) = &self.secret {
            insert_lossy(&mut headers, AUTHORIZATION, &format!("Bearer {secret}"));
        }
        let timestamp = match self.timestamp {
            Timestamp::Now => Some(Utc::now()),
            Timestamp::At(at) => Some(at),
            Timestamp::Omitted => None,
        };
        if let Some(at) = timestamp {
            let text = at.to_rfc3339_opts(SecondsFormat::Secs, true);
            insert_lossy(&mut headers, SIGNATURE_TIMESTAMP, &text);
        }
        insert_lossy(&mut headers, USER_AGENT, &self.user_agent);
        let body = match (&self.bomb, &self.raw_json) {
            (Some(bomb), _) => bomb.clone(),
            (None, Some(json)) => encode_body(json, form),
            (None, None) => encode_body(&envelope_json(&self), form),
        };
        (headers, body)
    }

    /// The delivery as a `POST` request with an axum body.
    pub fn build(self) -> Request<Body> {
        self.build_with()
    }

    /// The delivery as a `POST` request with any body type made from [`Bytes`]
    /// (`http_body_util::Full<Bytes>`, say).
    pub fn build_with<B: From<Bytes>>(self) -> Request<B> {
        let uri = self.uri.clone();
        let (headers, body) = self.encode();
        post(&uri, headers, body)
    }
}

/// The hash the builder gives a record with these fields: 16 hex digits from SHA-256.
///
/// It hashes the fields' canonical JSON (object keys sorted at every level, no whitespace),
/// so key order does not matter. **Not Polytomic's algorithm**, which is unpublished.
///
/// ```
/// use polytomic_webhook::testing::record_hash;
/// use serde_json::json;
///
/// let hash = record_hash(&json!({"a": 1, "b": "x"}));
/// assert_eq!(hash, record_hash(&json!({"b": "x", "a": 1})));
/// assert_ne!(hash, record_hash(&json!({"a": 2, "b": "x"})));
/// assert_eq!(hash.len(), 16);
/// ```
pub fn record_hash(fields: &Value) -> String {
    text_hash(&canonical(fields).to_string())
}

/// 16 hex digits of the SHA-256 of `text`.
fn text_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `value` with every object's keys in sorted order, whatever serde_json's map keeps.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by_key(|(key, _)| *key);
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.clone(), canonical(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn envelope_json(delivery: &Delivery) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        event: &'a str,
        object: Object<'a>,
    }
    #[derive(Serialize)]
    struct Object<'a> {
        id: &'a str,
        name: &'a str,
        records: Vec<RecordOut<'a>>,
        #[serde(skip_serializing_if = "Map::is_empty")]
        metadata: &'a Map<String, Value>,
    }
    #[derive(Serialize)]
    struct RecordOut<'a> {
        hash: String,
        fields: &'a Json,
    }
    let records = delivery
        .records
        .iter()
        .map(|(hash, fields)| RecordOut {
            hash: hash.clone().unwrap_or_else(|| match fields {
                Json::Value(value) => record_hash(value),
                Json::Fields(raw) => text_hash(&raw.compact()),
                Json::Raw(raw) => text_hash(&raw.compact()),
            }),
            fields,
        })
        .collect();
    to_vec(&Envelope {
        event: &delivery.event,
        object: Object {
            id: &delivery.sync_id,
            name: &delivery.sync_name,
            records,
            metadata: &delivery.metadata,
        },
    })
}

/// JSON to send: a value, or validated text written byte for byte.
#[derive(Clone, Debug)]
enum Json {
    Value(Value),
    Fields(RawFields),
    Raw(RawJson),
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(value) => value.serialize(serializer),
            Self::Fields(raw) => raw.serialize(serializer),
            Self::Raw(raw) => raw.serialize(serializer),
        }
    }
}

/// A `POST` to `uri` with these headers and body.
fn post<B: From<Bytes>>(uri: &str, headers: HeaderMap, body: Bytes) -> Request<B> {
    let mut request = Request::new(B::from(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri.parse().unwrap_or_default();
    *request.headers_mut() = headers;
    request
}

/// `decoded_len` zero bytes, gzipped as they are generated.
fn gzip_bomb(decoded_len: u64) -> Bytes {
    let zeros = [0_u8; 64 * 1024];
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    let mut left = decoded_len;
    while left > 0 {
        let chunk = usize::try_from(left).map_or(zeros.len(), |left| left.min(zeros.len()));
        write_to_vec(&mut encoder, &zeros[..chunk]);
        left -= chunk as u64;
    }
    finish(encoder).into()
}

fn encode_body(json: &[u8], form: BodyForm) -> Bytes {
    match form {
        BodyForm::Gzip | BodyForm::GzipWithoutHeader => {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
            write_to_vec(&mut encoder, json);
            finish(encoder).into()
        }
        BodyForm::Identity => Bytes::copy_from_slice(json),
    }
}

// Writing to a `Vec` cannot fail, and serializing string-keyed JSON values cannot either; the
// `expect`s below state those facts rather than handle errors.

fn write_to_vec(encoder: &mut GzEncoder<Vec<u8>>, data: &[u8]) {
    #[allow(clippy::expect_used)]
    encoder
        .write_all(data)
        .expect("writing to a Vec never fails");
}

fn finish(encoder: GzEncoder<Vec<u8>>) -> Vec<u8> {
    #[allow(clippy::expect_used)]
    encoder.finish().expect("writing to a Vec never fails")
}

fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    #[allow(clippy::expect_used)]
    serde_json::to_vec(value).expect("JSON values with string keys always serialize")
}

fn to_json<T: Serialize + ?Sized>(fields: &T) -> Value {
    serde_json::to_value(fields)
        .unwrap_or_else(|error| panic!("record fields do not serialize to JSON: {error}"))
}

/// Inserts a header, replacing bytes a header value cannot hold so that a test's odd secret
/// yields an odd request rather than a panic.
fn insert_lossy(headers: &mut HeaderMap, name: http::HeaderName, value: &str) {
    let value = HeaderValue::from_str(value).unwrap_or_else(|_| {
        let cleaned: String = value
            .chars()
            .map(|c| {
                if c == '\t' || (' '..='~').contains(&c) {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        HeaderValue::from_str(&cleaned).unwrap_or(HeaderValue::from_static(""))
    });
    headers.insert(name, value);
}

/// Which bytes an [`EventDelivery`]'s signature covers when its body is gzipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignedBytes {
    /// The bytes on the wire.
    #[default]
    Received,
    /// The JSON before compression.
    Decoded,
}

/// A builder for one signed delivery of Polytomic's organisation Events webhook.
///
/// Defaults: `POST /`, a fixed event id and organisation id, the current time as `created_at`,
/// an empty object as payload, plain JSON, and no `Polytomic-Signature` until
/// [`secret`](Self::secret) is called; the signature is then lowercase hex over the body as
/// sent.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, routing::post};
/// use polytomic_webhook::prelude::*;
/// use polytomic_webhook::testing::EventDelivery;
/// use tower::ServiceExt;
///
/// async fn receive(event: PolytomicOrgEvent) -> String {
///     let counts = event.payload().counts().unwrap_or_default();
///     format!("{} {:?}", event.kind(), counts.total_records)
/// }
///
/// let config = PolytomicOrgEventsConfig::default().secrets(SigningSecrets::new("events-secret")?);
/// let app = Router::new()
///     .route("/events", post(receive))
///     .layer(PolytomicOrgEventsLayer::new(config)?);
///
/// let request = EventDelivery::new("sync.completed")
///     .uri("/events")
///     .counts(120, 100, 20)
///     .secret("events-secret")
///     .gzip(true)
///     .build();
/// let response = app.oneshot(request).await?;
/// assert_eq!(response.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct EventDelivery {
    uri: String,
    id: String,
    organization_id: String,
    kind: String,
    created_at: Option<DateTime<Utc>>,
    payload: Json,
    secret: Option<String>,
    encoding: SignatureEncoding,
    prefixed: bool,
    gzip: bool,
    signed: SignedBytes,
    raw_json: Option<Bytes>,
    bomb: Option<Bytes>,
    tamper: bool,
}

/// The event id an [`EventDelivery`] carries unless given another.
pub const SAMPLE_EVENT_ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// The organisation id an [`EventDelivery`] carries unless given another.
pub const SAMPLE_ORGANIZATION_ID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

impl EventDelivery {
    /// An event of type `kind` (`sync.completed`, say) with the defaults above.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            uri: "/".to_owned(),
            id: SAMPLE_EVENT_ID.to_owned(),
            organization_id: SAMPLE_ORGANIZATION_ID.to_owned(),
            kind: kind.into(),
            created_at: None,
            payload: Json::Value(Value::Object(Map::new())),
            secret: None,
            encoding: SignatureEncoding::Hex,
            prefixed: false,
            gzip: false,
            signed: SignedBytes::Received,
            raw_json: None,
            bomb: None,
            tamper: false,
        }
    }

    /// The request's path (and query).
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    /// The event's id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The organisation's id.
    pub fn organization_id(mut self, id: impl Into<String>) -> Self {
        self.organization_id = id.into();
        self
    }

    /// The event's `created_at`.
    pub fn created_at(mut self, at: DateTime<Utc>) -> Self {
        self.created_at = Some(at);
        self
    }

    /// The payload (the envelope's `event` member).
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = Json::Value(payload);
        self
    }

    /// The payload as its text, sent byte for byte (numbers no float holds included).
    ///
    /// ```
    /// use polytomic_webhook::prelude::RawJson;
    /// use polytomic_webhook::testing::EventDelivery;
    ///
    /// let payload: RawJson = r#"{"total_records": 18446744073709551616}"#.parse()?;
    /// let json = EventDelivery::new("sync.completed").payload_raw(payload).json();
    /// assert!(String::from_utf8(json.to_vec())?.contains(r#""event":{"total_records": 18446744073709551616}"#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn payload_raw(mut self, payload: RawJson) -> Self {
        self.payload = Json::Raw(payload);
        self
    }

    /// Sets the payload's documented record counts, keeping the other members of a payload
    /// given as a value (one given as text is replaced).
    pub fn counts(mut self, total: u64, inserted: u64, updated: u64) -> Self {
        if !matches!(&self.payload, Json::Value(value) if value.is_object()) {
            self.payload = Json::Value(Value::Object(Map::new()));
        }
        if let Json::Value(Value::Object(members)) = &mut self.payload {
            members.insert("total_records".to_owned(), total.into());
            members.insert("inserted_records".to_owned(), inserted.into());
            members.insert("updated_records".to_owned(), updated.into());
        }
        self
    }

    /// Signs the delivery with `secret`.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Writes the signature in `encoding` (default: lowercase hex).
    pub fn encoding(mut self, encoding: SignatureEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Puts `sha256=` in front of the signature.
    pub fn prefixed(mut self, prefixed: bool) -> Self {
        self.prefixed = prefixed;
        self
    }

    /// Gzips the body, with `Content-Encoding: gzip`.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// Which bytes the signature covers when gzipped (default: as received).
    pub fn signed_bytes(mut self, signed: SignedBytes) -> Self {
        self.signed = signed;
        self
    }

    /// Changes one byte of the body after signing it (expected: 401 `invalid_signature`).
    pub fn tamper(mut self) -> Self {
        self.tamper = true;
        self
    }

    /// Replaces the JSON with `json` as it is; it is still gzipped and signed as configured.
    pub fn raw_json(mut self, json: &[u8]) -> Self {
        self.raw_json = Some(Bytes::copy_from_slice(json));
        self
    }

    /// Replaces the JSON with a truncated document (expected once signed: 400 `invalid_json`).
    pub fn malformed_json(self) -> Self {
        self.raw_json(&br#"{"id":"e","type":"#[..])
    }

    /// Replaces the body with a gzip bomb of `decoded_len` zero bytes, declared
    /// `Content-Encoding: gzip` and signed as received (expected with the default limits: 413
    /// `body_too_large`).
    pub fn bomb(mut self, decoded_len: u64) -> Self {
        self.bomb = Some(gzip_bomb(decoded_len));
        self
    }

    /// The envelope JSON, before any compression.
    pub fn json(&self) -> Bytes {
        if let Some(json) = &self.raw_json {
            return json.clone();
        }
        // Members in name order, as a map of them would write them.
        #[derive(Serialize)]
        struct Envelope<'a> {
            created_at: String,
            event: &'a Json,
            id: &'a str,
            organization_id: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
        }
        let created_at = self.created_at.unwrap_or_else(Utc::now);
        to_vec(&Envelope {
            created_at: created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            event: &self.payload,
            id: &self.id,
            organization_id: &self.organization_id,
            kind: &self.kind,
        })
        .into()
    }

    /// The headers and body bytes of the delivery, ready for any HTTP client.
    pub fn encode(self) -> (HeaderMap, Bytes) {
        let json = self.json();
        let gzip = self.gzip || self.bomb.is_some();
        let body = match &self.bomb {
            Some(bomb) => bomb.clone(),
            None if gzip => encode_body(&json, BodyForm::Gzip),
            None => json.clone(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(secret) = &self.secret {
            let signed = match self.signed {
                SignedBytes::Decoded if self.bomb.is_none() => &json,
                _ => &body,
            };
            let tag = crate::auth::signature::sign(secret, signed);
            insert_lossy(
                &mut headers,
                crate::auth::signature::SIGNATURE_HEADER,
                &self.encoding.encode(&tag, self.prefixed),
            );
        }
        let body = if self.tamper {
            let mut changed = body.to_vec();
            // The last byte of plain JSON is its closing brace; of gzip, the length trailer.
            if let Some(last) = changed.last_mut() {
                *last ^= 0x01;
            }
            changed.into()
        } else {
            body
        };
        (headers, body)
    }

    /// The delivery as a `POST` request with an axum body.
    pub fn build(self) -> Request<Body> {
        self.build_with()
    }

    /// The delivery as a `POST` request with any body type made from [`Bytes`].
    pub fn build_with<B: From<Bytes>>(self) -> Request<B> {
        let uri = self.uri.clone();
        let (headers, body) = self.encode();
        post(&uri, headers, body)
    }
}

/// Runs `future` while capturing, as plain text, what this thread logs (see
/// [`LogCapture`](polytomic_webhook_core::logs::LogCapture)), and returns
/// its output with everything logged meanwhile, to assert on the delivery's log line.
///
/// Run the server on the test's current-thread runtime so its spans land here too.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ((), logs) = polytomic_webhook::testing::capture_logs(async {
///     tracing::warn!(outcome = "invalid_token", "webhook delivery rejected");
/// })
/// .await;
/// assert!(logs.contains("outcome=\"invalid_token\""));
/// # }
/// ```
pub async fn capture_logs<F: Future>(future: F) -> (F::Output, String) {
    let capture = polytomic_webhook_core::logs::LogCapture::start();
    let output = future.await;
    (output, capture.finish())
}

/// The value of one series in a Prometheus text exposition (what `/metrics` answers), or
/// `None` when the series is not there. `series` is the metric name with its labels as the
/// exposition writes them.
///
/// ```
/// use polytomic_webhook::testing::prometheus_value;
///
/// let text = "# TYPE hits counter\nhits{outcome=\"accepted\"} 3\nhits{outcome=\"refused\"} 1\n";
/// assert_eq!(prometheus_value(text, r#"hits{outcome="accepted"}"#), Some(3.0));
/// assert_eq!(prometheus_value(text, r#"hits{outcome="ignored"}"#), None);
/// ```
pub fn prometheus_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
