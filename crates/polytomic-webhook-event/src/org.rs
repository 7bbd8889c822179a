//! Polytomic's organisation Events webhook: one delivery per sync or bulk-sync state change.
//!
//! Besides the per-sync custom webhook (`sync.records` batches, see [`SyncRecords`]), Polytomic
//! has one organisation-level webhook that reports how sync runs go. Each delivery is a JSON
//! object with the event's `id`, the `organization_id`, its `type` (such as
//! `sync.completed`), `created_at` (RFC 3339) and the payload under `event`:
//!
//! ```json
//! {
//!   "id": "8f0b7a52-3e0f-4d0c-a7a9-2c1f0b5b6e01",
//!   "organization_id": "6b7e9f0e-64b6-4f52-8f1e-0c4b5b0c9d11",
//!   "type": "sync.completed",
//!   "created_at": "2024-05-01T12:00:00Z",
//!   "event": {"total_records": 120, "inserted_records": 100, "updated_records": 20}
//! }
//! ```
//!
//! [`PolytomicOrgEvent<T>`] is the extractor (and [`parse_org_event`] the plain function) for
//! it. All five envelope members are required; any other member, at any level, is ignored. The
//! payload is kept as its JSON text ([`RawPayload`], a view of the body's buffer) unless the
//! handler asks for a type `T`; [`RawPayload::counts`] reads the record counts the completion
//! events document. An event type this crate does not know is not an error: it arrives as
//! [`OrgEventType::Other`].
//!
//! The body is read and refused under the same rules as a `sync.records` delivery: the
//! `Content-Type` must be JSON (415), the size limits apply (413), a body that is not JSON is
//! 400 `invalid_json`, and a missing or mistyped envelope member is 422 `invalid_envelope` with
//! the JSON `path` of the first problem (`event.total_records`, for instance). No value from
//! the body ever appears in a problem.
//!
//! These deliveries are authenticated by an HMAC signature rather than a bearer token: put the
//! route behind the composed events layer of the `polytomic-webhook` crate, or check
//! `Polytomic-Signature` yourself (the `polytomic-webhook-auth` crate's `signature` module)
//! before parsing.
//!
//! [`SyncRecords`]: crate::SyncRecords

use std::fmt;

use axum_core::extract::{FromRequest, Request};
use bytes::Bytes;
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::admitted::Gate;
use crate::extract::{buffer, check_content_type};
use crate::parse::{is_malformed, message, not_utf8, syntax_error};
use crate::raw::{MAX_DEPTH, RawJson, RoomGuard, SourceGuard};
use crate::rejection::{BodyTooLarge, EventRejection, InvalidEnvelope, InvalidJson, TooLargeLimit};

/// The type of an organisation event: the ten Polytomic documents, or any other name.
///
/// New types may appear at any time, so an unknown name is kept as [`Other`](Self::Other)
/// rather than refused.
///
/// ```
/// use polytomic_webhook_event::org::OrgEventType;
///
/// assert_eq!(OrgEventType::from("sync.completed"), OrgEventType::SyncCompleted);
/// assert_eq!(OrgEventType::SyncCompleted.as_str(), "sync.completed");
/// assert_eq!(
///     OrgEventType::from("sync.paused"),
///     OrgEventType::Other("sync.paused".to_owned()),
/// );
/// assert_eq!(OrgEventType::KNOWN.len(), 10);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OrgEventType {
    /// `sync.running`
    SyncRunning,
    /// `sync.failed`
    SyncFailed,
    /// `sync.canceled`
    SyncCanceled,
    /// `sync.completed`
    SyncCompleted,
    /// `sync.completed_with_errors`
    SyncCompletedWithErrors,
    /// `bulk_sync.running`
    BulkSyncRunning,
    /// `bulk_sync.completed`
    BulkSyncCompleted,
    /// `bulk_sync.canceled`
    BulkSyncCanceled,
    /// `bulk_sync.failed`
    BulkSyncFailed,
    /// `bulk_sync.completed_with_error` (singular, as Polytomic spells it)
    BulkSyncCompletedWithError,
    /// A type this crate does not know, with its name as sent.
    Other(String),
}

impl OrgEventType {
    /// Every documented type, in the order Polytomic lists them.
    pub const KNOWN: [Self; 10] = [
        Self::SyncRunning,
        Self::SyncFailed,
        Self::SyncCanceled,
        Self::SyncCompleted,
        Self::SyncCompletedWithErrors,
        Self::BulkSyncRunning,
        Self::BulkSyncCompleted,
        Self::BulkSyncCanceled,
        Self::BulkSyncFailed,
        Self::BulkSyncCompletedWithError,
    ];

    /// The type's name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::SyncRunning => "sync.running",
            Self::SyncFailed => "sync.failed",
            Self::SyncCanceled => "sync.canceled",
            Self::SyncCompleted => "sync.completed",
            Self::SyncCompletedWithErrors => "sync.completed_with_errors",
            Self::BulkSyncRunning => "bulk_sync.running",
            Self::BulkSyncCompleted => "bulk_sync.completed",
            Self::BulkSyncCanceled => "bulk_sync.canceled",
            Self::BulkSyncFailed => "bulk_sync.failed",
            Self::BulkSyncCompletedWithError => "bulk_sync.completed_with_error",
            Self::Other(name) => name,
        }
    }

    /// Whether this is one of the documented types.
    pub fn is_known(&self) -> bool {
        !matches!(self, Self::Other(_))
    }

    /// Whether the run this event reports has ended, however it ended.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Self::SyncRunning | Self::BulkSyncRunning | Self::Other(_)
        )
    }
}

impl From<&str> for OrgEventType {
    fn from(name: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|known| known.as_str() == name)
            .unwrap_or_else(|| Self::Other(name.to_owned()))
    }
}

impl fmt::Display for OrgEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OrgEventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OrgEventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::from(name.as_ref()))
    }
}

/// An event's payload kept as its JSON text, read on demand: the default payload type.
///
/// The text is a view of the delivery's buffer, exactly as received.
///
/// ```
/// use polytomic_webhook_event::org::RawPayload;
///
/// let payload: RawPayload = r#"{"total_records": 3, "logs": "https://example.com/l"}"#.parse()?;
/// assert_eq!(payload.counts()?.total_records, Some(3));
/// assert_eq!(payload.get("logs").map(|raw| raw.get()), Some(r#""https://example.com/l""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawPayload(RawJson);

impl RawPayload {
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The JSON text as bytes, to forward or store as is.
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// One top-level member's raw JSON, when the payload is an object that has it.
    pub fn get(&self, name: &str) -> Option<&RawValue> {
        let members: std::collections::HashMap<std::borrow::Cow<'_, str>, &RawValue> =
            serde_json::from_str(self.as_str()).ok()?;
        members.get(name).copied()
    }

    /// Deserializes the payload into `T`. The error says where inside the payload it failed
    /// (`event.…`) and turns into the same 422 `invalid_envelope` answer the extractor gives.
    pub fn deserialize_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, EventRejection> {
        let mut deserializer = serde_json::Deserializer::from_str(self.as_str());
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = match error.path().to_string() {
                inner if inner == "." => "event".to_owned(),
                inner => format!("event.{inner}"),
            };
            InvalidEnvelope::new(path, message(error.inner())).into()
        })
    }

    /// The record counts of a completion event (absent counts are `None`).
    pub fn counts(&self) -> Result<CompletionCounts, EventRejection> {
        self.deserialize_as()
    }
}

impl std::str::FromStr for RawPayload {
    type Err = serde_json::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(Self)
    }
}

impl fmt::Debug for RawPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RawPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for RawPayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawPayload {
    /// Needs borrowed JSON text, as [`RawJson`] does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawJson::deserialize(deserializer).map(Self)
    }
}

/// The record counts Polytomic documents for completion events (`sync.completed` and the
/// like). Each is `None` when absent or `null`; other payload members are ignored.
///
/// ```
/// use polytomic_webhook_event::org::CompletionCounts;
///
/// let counts: CompletionCounts =
///     serde_json::from_str(r#"{"total_records": 5, "inserted_records": 4, "extra": true}"#)?;
/// assert_eq!(counts.total_records, Some(5));
/// assert_eq!(counts.inserted_records, Some(4));
/// assert_eq!(counts.updated_records, None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CompletionCounts {
    /// How many records the run processed.
    pub total_records: Option<u64>,
    /// How many of them were inserted.
    pub inserted_records: Option<u64>,
    /// How many of them were updated.
    pub updated_records: Option<u64>,
}

/// One organisation event, with its payload as `T` ([`RawPayload`] by default).
///
/// As an axum extractor it checks the `Content-Type`, reads the body under the configured
/// limits and parses it; see the [module docs](self). It does not check the signature: the
/// composed events layer does that before the body reaches it, and the extractor refuses
/// (500 `layer_missing`) a request that layer did not admit.
///
/// ```
/// use axum::{Router, routing::post};
/// use polytomic_webhook_event::org::{OrgEventType, PolytomicOrgEvent};
///
/// async fn receive(event: PolytomicOrgEvent) -> &'static str {
///     if event.kind() == &OrgEventType::SyncCompleted {
///         let counts = event.payload().counts();
///         let _ = counts.map(|counts| counts.total_records);
///     }
///     "ok"
/// }
///
/// // Wrap the route in `PolytomicOrgEventsLayer` (the `polytomic-webhook` crate): without it,
/// // every request is refused.
/// let app: Router = Router::new().route("/webhooks/polytomic/events", post(receive));
/// ```
#[derive(Clone, Debug)]
pub struct PolytomicOrgEvent<T = RawPayload> {
    id: String,
    organization_id: String,
    created_at: DateTime<Utc>,
    kind: OrgEventType,
    payload: T,
}

impl<T> PolytomicOrgEvent<T> {
    /// The event's id: the same for every retry of one delivery, so the key to deduplicate on.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The organisation the event belongs to.
    pub fn organization_id(&self) -> &str {
        &self.organization_id
    }

    /// When the event was created, in UTC.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// The event's type.
    pub fn kind(&self) -> &OrgEventType {
        &self.kind
    }

    /// The payload (the envelope's `event` member).
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The payload, dropping the envelope.
    pub fn into_payload(self) -> T {
        self.payload
    }
}

impl<T: Serialize> Serialize for PolytomicOrgEvent<T> {
    /// Writes the envelope back in Polytomic's shape (`type`, and the payload under `event`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Envelope {
            id: self.id.as_str(),
            organization_id: self.organization_id.as_str(),
            kind: &self.kind,
            created_at: self.created_at,
            event: &self.payload,
        }
        .serialize(serializer)
    }
}

/// The wire shape, for both directions.
#[derive(Serialize, Deserialize)]
struct Envelope<I, K, P> {
    id: I,
    organization_id: I,
    #[serde(rename = "type")]
    kind: K,
    created_at: DateTime<Utc>,
    event: P,
}

impl<T, S> FromRequest<S> for PolytomicOrgEvent<T>
where
    T: DeserializeOwned + 'static,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(mut req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // Fails closed before the body is read: see `WithoutLayer` for the deliberate way round.
        Gate::OrgEvents.require(req.extensions())?;
        // The events layer parsed the verified body already: take its parse, not a second one.
        if let Some(verified) = req.extensions_mut().remove::<VerifiedOrgEvent>() {
            return verified.into_event();
        }
        let (_config, body) = buffer(req).await?;
        parse_org_event_shared(&body)
    }
}

/// An event whose signature the events layer verified, parsed once from the verified body,
/// as a request extension: the dedup layer reads its id there and the [`PolytomicOrgEvent`]
/// extractor takes it, so the body is parsed once however many layers look at it. Its
/// payload is a view of the body's buffer.
///
/// ```
/// use bytes::Bytes;
/// use http::HeaderMap;
/// use polytomic_webhook_event::EventConfig;
/// use polytomic_webhook_event::org::VerifiedOrgEvent;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("content-type", "application/json".parse().unwrap());
/// let body = Bytes::from_static(br#"{"id":"e1","organization_id":"o1","type":"sync.running",
///     "created_at":"2024-05-01T12:00:00Z","event":{}}"#);
/// let verified = VerifiedOrgEvent::parse(&headers, &body, &EventConfig::default())?;
/// assert_eq!(verified.event().id(), "e1");
///
/// headers.insert("content-type", "text/plain".parse().unwrap());
/// let refused = VerifiedOrgEvent::parse(&headers, &body, &EventConfig::default()).unwrap_err();
/// assert_eq!(refused.code(), "unsupported_media_type");
/// # Ok::<(), polytomic_webhook_event::EventRejection>(())
/// ```
#[derive(Clone, Debug)]
pub struct VerifiedOrgEvent(PolytomicOrgEvent);

impl VerifiedOrgEvent {
    /// The extractor's checks over a body the caller has verified and holds whole: the
    /// `Content-Type` (415), `config.max_body_bytes` (413), then the envelope (400, 422).
    pub fn parse(
        headers: &http::HeaderMap,
        body: &Bytes,
        config: &crate::EventConfig,
    ) -> Result<Self, EventRejection> {
        check_content_type(headers)?;
        if body.len() > config.max_body_bytes {
            let limit = u64::try_from(config.max_body_bytes).unwrap_or(u64::MAX);
            return Err(BodyTooLarge::new(TooLargeLimit::Extractor(limit)).into());
        }
        parse_org_event_shared(body).map(Self)
    }

    /// The event, its payload as raw text.
    pub fn event(&self) -> &PolytomicOrgEvent {
        &self.0
    }

    /// The event with its payload as `T`: the parse itself when `T` is [`RawPayload`], else the
    /// payload's text read into `T` (nothing else of the body is read again).
    fn into_event<T: DeserializeOwned + 'static>(
        self,
    ) -> Result<PolytomicOrgEvent<T>, EventRejection> {
        let mut raw = Some(self.0);
        let same = (&mut raw as &mut dyn std::any::Any)
            .downcast_mut::<Option<PolytomicOrgEvent<T>>>()
            .and_then(Option::take);
        match (same, raw) {
            (Some(event), _) => Ok(event),
            (None, Some(raw)) => Ok(PolytomicOrgEvent {
                payload: raw.payload.deserialize_as()?,
                id: raw.id,
                organization_id: raw.organization_id,
                created_at: raw.created_at,
                kind: raw.kind,
            }),
            // `raw` is only taken when the types are the same.
            (None, None) => Err(InvalidEnvelope::new(String::new(), String::new()).into()),
        }
    }
}

/// Parses an organisation event from its body, for use without axum.
///
/// Applies the same checks and returns the same rejections as the [`PolytomicOrgEvent`]
/// extractor, except the `Content-Type` check and the body-size limits (the caller has the
/// body already). It does not check the signature.
///
/// ```
/// use polytomic_webhook_event::org::{OrgEventType, parse_org_event};
/// use polytomic_webhook_event::org::RawPayload;
///
/// let body = br#"{"id":"e1","organization_id":"o1","type":"sync.completed",
///     "created_at":"2024-05-01T12:00:00+02:00","event":{"total_records":7}}"#;
/// let event = parse_org_event::<RawPayload>(body)?;
/// assert_eq!(event.kind(), &OrgEventType::SyncCompleted);
/// assert_eq!(event.created_at().to_rfc3339(), "2024-05-01T10:00:00+00:00");
/// assert_eq!(event.payload().counts()?.total_records, Some(7));
///
/// let error = parse_org_event::<RawPayload>(br#"{"id":"e1"}"#).unwrap_err();
/// assert_eq!((error.status().as_u16(), error.code()), (422, "invalid_envelope"));
/// # Ok::<(), polytomic_webhook_event::EventRejection>(())
/// ```
pub fn parse_org_event<T: DeserializeOwned>(
    body: &[u8],
) -> Result<PolytomicOrgEvent<T>, EventRejection> {
    parse_org_event_shared(&Bytes::copy_from_slice(body))
}

/// [`parse_org_event`] over a body already in a shared buffer, which the raw payload refers to.
pub(crate) fn parse_org_event_shared<T: DeserializeOwned>(
    body: &Bytes,
) -> Result<PolytomicOrgEvent<T>, EventRejection> {
    #[cfg(feature = "testing")]
    ORG_EVENT_PARSES.with(|parses| parses.set(parses.get() + 1));
    let text = ByteString::try_from(body.clone()).map_err(|_| not_utf8(body))?;
    let _source = SourceGuard::enter(text.clone());
    if !text.trim_start().starts_with('{') {
        return Err(not_an_object(&text));
    }
    // The payload is a member of the envelope: what serde_json's limit leaves it, as if it
    // were read as a type.
    let room = RoomGuard::enter(MAX_DEPTH - 1);
    let envelope: Envelope<String, OrgEventType, T> =
        serde_json::from_str(&text).map_err(|error| explain::<T>(&text, error))?;
    drop(room);
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("event_id", envelope.id.as_str());
        span.record("event_type", envelope.kind.as_str());
    }
    Ok(PolytomicOrgEvent {
        id: envelope.id,
        organization_id: envelope.organization_id,
        created_at: envelope.created_at,
        kind: envelope.kind,
        payload: envelope.event,
    })
}

#[cfg(feature = "testing")]
thread_local! {
    static ORG_EVENT_PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many organisation-event bodies this thread has parsed (the envelope read, by the
/// extractor, [`parse_org_event`], [`VerifiedOrgEvent::parse`] or [`envelope_id`]). A test
/// hook (feature `testing`), outside the API: an accepted event costs one.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub fn org_event_parses() -> usize {
    ORG_EVENT_PARSES.with(std::cell::Cell::get)
}

/// The envelope's `id`, read without building anything else: for a layer that needs the id
/// of a body no [`VerifiedOrgEvent`] describes.
///
/// ```
/// use polytomic_webhook_event::org::envelope_id;
///
/// assert_eq!(envelope_id(br#"{"event":{"id":"inner"},"id":"outer"}"#).as_deref(), Some("outer"));
/// assert_eq!(envelope_id(b"not json"), None);
/// ```
pub fn envelope_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    #[cfg(feature = "testing")]
    ORG_EVENT_PARSES.with(|parses| parses.set(parses.get() + 1));
    let envelope: IdOnly<'_> = serde_json::from_slice(body).ok()?;
    Some(envelope.id.into_owned())
}

/// serde's derived structs also accept a JSON array of the members in order; the envelope is an
/// object, so anything else is refused (400 when it is not JSON at all).
#[cold]
fn not_an_object(text: &str) -> EventRejection {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    match IgnoredAny::deserialize(&mut deserializer).and_then(|_| deserializer.end()) {
        Err(syntax) => InvalidJson::new(syntax).into(),
        Ok(_) => InvalidEnvelope::new(
            String::new(),
            "invalid type: expected the event envelope object".to_owned(),
        )
        .into(),
    }
}

/// The slow path: says whether the body is not JSON at all, or where the envelope is wrong.
#[cold]
fn explain<T: DeserializeOwned>(text: &str, error: serde_json::Error) -> EventRejection {
    if is_malformed(&error) {
        return InvalidJson::new(error).into();
    }
    // serde stops at the first error, which may be a data error in front of a syntax error.
    if let Some(syntax) = syntax_error(text.as_bytes()) {
        return InvalidJson::new(syntax).into();
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let tracked =
        serde_path_to_error::deserialize::<_, Envelope<String, OrgEventType, T>>(&mut deserializer);
    match tracked {
        Err(tracked) => {
            let path = match tracked.path().to_string() {
                top if top == "." => String::new(),
                path => path,
            };
            InvalidEnvelope::new(path, message(tracked.inner())).into()
        }
        // Parsing is deterministic, so this does not happen; keep the first account.
        Ok(_) => InvalidEnvelope::new(String::new(), message(&error)).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: &str, payload: &str) -> String {
        format!(
            r#"{{"id":"evt-1","organization_id":"org-1","type":"{kind}",
                "created_at":"2024-05-01T12:00:00Z","event":{payload},"future_member":[1,2]}}"#
        )
    }

    #[test]
    fn every_documented_type_round_trips_by_name() {
        for kind in OrgEventType::KNOWN {
            let event = parse_org_event::<RawPayload>(body(kind.as_str(), "{}").as_bytes())
                .unwrap_or_else(|error| panic!("{kind}: {error}"));
            assert_eq!(event.kind(), &kind);
            assert!(kind.is_known());
        }
        let names: std::collections::HashSet<&str> = OrgEventType::KNOWN
            .iter()
            .map(OrgEventType::as_str)
            .collect();
        assert_eq!(names.len(), 10);
    }

    #[test]
    fn an_unknown_type_is_other_not_an_error() {
        let event =
            parse_org_event::<RawPayload>(body("sync.paused", r#"{"a":1}"#).as_bytes()).unwrap();
        assert_eq!(event.kind(), &OrgEventType::Other("sync.paused".to_owned()));
        assert!(!event.kind().is_known());
        assert_eq!(event.payload().as_str(), r#"{"a":1}"#);
    }

    #[test]
    fn envelope_members_are_read() {
        let event = parse_org_event::<RawPayload>(
            br#"{"id":"e9","organization_id":"o7","type":"sync.failed",
                "created_at":"2024-05-01T14:30:00.5+02:00","event":{"error":"boom"}}"#,
        )
        .unwrap();
        assert_eq!(event.id(), "e9");
        assert_eq!(event.organization_id(), "o7");
        assert_eq!(
            event.created_at().to_rfc3339(),
            "2024-05-01T12:30:00.500+00:00"
        );
        assert_eq!(
            event.payload().get("error").map(RawValue::get),
            Some(r#""boom""#)
        );
    }

    #[test]
    fn the_raw_payload_shares_the_body_buffer() {
        let body = Bytes::from(body("sync.completed", r#"{"total_records":3}"#));
        let event = parse_org_event_shared::<RawPayload>(&body).unwrap();
        let payload = event.payload().as_bytes();
        let inside = body.as_ptr_range();
        assert!(inside.contains(&payload.as_ptr()), "the payload was copied");
    }

    #[test]
    fn completion_counts_are_typed_and_tolerant() {
        let event = parse_org_event::<RawPayload>(
            body(
                "sync.completed",
                r#"{"total_records":120,"inserted_records":100,"updated_records":20,
                    "logs":{"inserted":"https://example.com/i.json"}}"#,
            )
            .as_bytes(),
        )
        .unwrap();
        let counts = event.payload().counts().unwrap();
        assert_eq!(
            (
                counts.total_records,
                counts.inserted_records,
                counts.updated_records
            ),
            (Some(120), Some(100), Some(20))
        );
        // Typed at extraction, too.
        let typed = parse_org_event::<CompletionCounts>(
            body(
                "sync.completed",
                r#"{"total_records":5,"updated_records":null}"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(typed.payload().total_records, Some(5));
        assert_eq!(typed.payload().updated_records, None);
        assert_eq!(typed.payload().inserted_records, None);
    }

    #[test]
    fn a_mistyped_count_is_located_without_its_value() {
        let event = parse_org_event::<RawPayload>(
            body("sync.completed", r#"{"total_records":"SECRET-123"}"#).as_bytes(),
        )
        .unwrap();
        let error = event.payload().counts().unwrap_err();
        let EventRejection::InvalidEnvelope(located) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(located.path(), "event.total_records");
        let typed = parse_org_event::<CompletionCounts>(
            body("sync.completed", r#"{"total_records":"SECRET-123"}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(typed.code(), "invalid_envelope");
        let EventRejection::InvalidEnvelope(located) = &typed else {
            panic!("{typed:?}")
        };
        assert_eq!(located.path(), "event.total_records");
        for text in [format!("{error}"), format!("{typed}")] {
            assert!(!text.contains("SECRET"), "{text}");
        }
    }

    #[test]
    fn envelope_problems_are_located() {
        let cases: [(&str, &str); 6] = [
            (
                r#"{"organization_id":"o","type":"sync.failed","created_at":"2024-05-01T12:00:00Z","event":{}}"#,
                "",
            ),
            (
                r#"{"id":7,"organization_id":"o","type":"sync.failed","created_at":"2024-05-01T12:00:00Z","event":{}}"#,
                "id",
            ),
            (
                r#"{"id":"e","organization_id":"o","type":"sync.failed","created_at":"yesterday","event":{}}"#,
                "created_at",
            ),
            (
                r#"{"id":"e","organization_id":"o","type":null,"created_at":"2024-05-01T12:00:00Z","event":{}}"#,
                "type",
            ),
            (
                r#"{"id":"e","organization_id":"o","type":"sync.failed","created_at":"2024-05-01T12:00:00Z"}"#,
                "",
            ),
            (
                r#"{"id":"e","id":"f","organization_id":"o","type":"sync.failed","created_at":"2024-05-01T12:00:00Z","event":{}}"#,
                "",
            ),
        ];
        for (body, path) in cases {
            let error = parse_org_event::<RawPayload>(body.as_bytes()).unwrap_err();
            assert_eq!(error.status(), 422, "{body}");
            let EventRejection::InvalidEnvelope(located) = &error else {
                panic!("{error:?}")
            };
            assert_eq!(located.path(), path, "{body}");
            assert!(!error.to_string().contains("yesterday"), "{error}");
        }
    }

    #[test]
    fn malformed_and_non_utf8_bodies_are_invalid_json() {
        for body in [
            &b"{\"id\":"[..],
            b"not json",
            b"{\"id\":\"e\"} trailing",
            b"{\"id\":\"\xff\"}",
            b"",
        ] {
            let error = parse_org_event::<RawPayload>(body).unwrap_err();
            assert_eq!(
                (error.status().as_u16(), error.code()),
                (400, "invalid_json")
            );
        }
        // A data error in front of a syntax error is still reported as not JSON.
        let error = parse_org_event::<RawPayload>(br#"{"id":7,"#).unwrap_err();
        assert_eq!(error.code(), "invalid_json");
    }

    #[test]
    fn deep_nesting_is_bounded_and_never_overflows_the_stack() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deep = nested(100_000);
        // Kept raw, the payload is scanned without recursion, to the limit serde_json sets when
        // it reads one as a type: 127 levels from the body's top, the envelope the first.
        for payload in [deep.clone(), nested(MAX_DEPTH)] {
            let body = body("sync.failed", &payload);
            let raw = parse_org_event::<RawPayload>(body.as_bytes()).unwrap_err();
            let typed = parse_org_event::<serde_json::Value>(body.as_bytes()).unwrap_err();
            assert_eq!((raw.code(), typed.code()), ("invalid_json", "invalid_json"));
        }
        let event =
            parse_org_event::<RawPayload>(body("sync.failed", &nested(MAX_DEPTH - 1)).as_bytes())
                .unwrap();
        event
            .payload()
            .deserialize_as::<serde_json::Value>()
            .unwrap();
        // The envelope itself nested deep: not an object.
        for (body, code) in [
            (deep.clone(), "invalid_envelope"),
            ("[".repeat(100_000), "invalid_json"),
        ] {
            assert_eq!(
                parse_org_event::<RawPayload>(body.as_bytes())
                    .unwrap_err()
                    .code(),
                code
            );
        }
    }

    #[test]
    fn the_event_id_is_read_from_the_envelope_only() {
        assert_eq!(
            envelope_id(br#"{"event":{"id":"inner"},"id":"outer","type":"x"}"#).as_deref(),
            Some("outer")
        );
        assert_eq!(envelope_id(br#"{"id":"a\"b"}"#).as_deref(), Some("a\"b"));
        assert_eq!(envelope_id(br#"{"type":"x"}"#), None);
        assert_eq!(envelope_id(b"not json"), None);
    }

    #[test]
    fn an_array_of_the_members_is_not_an_envelope() {
        let error =
            parse_org_event::<RawPayload>(br#"["e","o","sync.failed","2024-05-01T12:00:00Z",{}]"#)
                .unwrap_err();
        assert_eq!(
            (error.status().as_u16(), error.code()),
            (422, "invalid_envelope")
        );
    }

    #[test]
    fn serializes_back_to_the_wire_shape() {
        let event =
            parse_org_event::<RawPayload>(body("bulk_sync.failed", r#"{"n":1.50}"#).as_bytes())
                .unwrap();
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"id":"evt-1","organization_id":"org-1","type":"bulk_sync.failed","created_at":"2024-05-01T12:00:00Z","event":{"n":1.50}}"#
        );
    }
}
