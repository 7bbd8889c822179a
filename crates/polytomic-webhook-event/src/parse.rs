//! Parsing a buffered body: the fast path, and the slow path that explains a failure.

use std::cell::Cell;

use bytes::Bytes;
use bytestring::ByteString;
use serde::Deserialize as _;
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde_json::error::Category;

use crate::budget::Floats;
use crate::config::{EventConfig, UnknownEventPolicy};
use crate::de::{Context, EnvelopeSeed, Failure, FailureKind, Segment};
use crate::event::{PolytomicEvent, SyncRecords};
use crate::numbers::may_hold_inexact;
use crate::raw::{MAX_DEPTH, SourceGuard, TOO_DEEP, duplicate_name, too_deep_at};
use crate::rejection::{
    BodyTooLarge, DuplicateFieldName, EventRejection, FieldNameCollision, InexactNumber,
    InvalidEnvelope, InvalidJson, InvalidRecordFields, TooLargeLimit, TooManyRecords, UnknownEvent,
};
use crate::sanitize::{sanitize, strip_position};

/// Parses and validates a delivery body, for use without axum.
///
/// Applies the same checks, and returns the same types and rejections, as the
/// [`PolytomicEvent`] extractor (everything but the `Content-Type` check and body reading).
/// Unknown event types are returned as [`PolytomicEvent::Unknown`].
///
/// ```
/// use polytomic_webhook_event::{EventConfig, PolytomicEvent, parse};
///
/// #[derive(Debug, serde::Deserialize)]
/// struct User {
///     email: String,
/// }
///
/// let body = br#"{
///   "event": "sync.records",
///   "object": {
///     "id": "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
///     "name": "Webhook HTTP Endpoint sync",
///     "records": [{"hash": "b7421c6c57bd49f7", "fields": {"email": "nathan@polytomic.com"}}]
///   }
/// }"#;
/// let Ok(PolytomicEvent::SyncRecords(batch)) = parse::<User>(body, &EventConfig::default())
/// else { panic!("a valid batch") };
/// assert_eq!(batch.records()[0].fields().email, "nathan@polytomic.com");
///
/// let error = parse::<User>(b"{\"event\":", &EventConfig::default()).unwrap_err();
/// assert_eq!(error.status(), 400);
/// assert_eq!(error.code(), "invalid_json");
/// ```
///
/// The body is copied once into a shared buffer, which the records' raw text
/// ([`RawFields`](crate::RawFields)) then refers to; the extractors skip that copy.
pub fn parse<T: DeserializeOwned>(
    body: &[u8],
    config: &EventConfig,
) -> Result<PolytomicEvent<T>, EventRejection> {
    parse_shared(&Bytes::copy_from_slice(body), config)
}

/// [`parse`] over a body already in a shared buffer, which raw values then refer to.
pub(crate) fn parse_shared<T: DeserializeOwned>(
    body: &Bytes,
    config: &EventConfig,
) -> Result<PolytomicEvent<T>, EventRejection> {
    // JSON text is UTF-8 throughout (RFC 8259 §8.1). serde_json checks only the strings it
    // builds, not those it skips (unknown keys), so the whole body is checked here, once; the
    // parser then reads it as `str` and checks nothing twice.
    let text = ByteString::try_from(body.clone()).map_err(|_| not_utf8(body))?;
    let _source = SourceGuard::enter(text.clone());
    let cx = Context::new(config, false);
    let result = envelope::<T>(&text, &cx);
    let floats = cx.floats();
    let mut event = result.map_err(|error| explain::<T>(body, config, error, cx.into_failure()))?;
    if let Some(tiny) = match floats {
        Floats::None => None,
        Floats::Some => Some(false),
        Floats::Tiny => Some(true),
    } {
        if may_hold_inexact(&text, tiny) {
            // Rare: a second pass that checks each record's numbers before building it.
            let cx = Context::new(config, false).checking_numbers();
            event = envelope::<T>(&text, &cx)
                .map_err(|error| explain::<T>(body, config, error, cx.into_failure()))?;
        }
    }
    Ok(event)
}

/// One pass of the envelope parser over the whole body.
fn envelope<T: DeserializeOwned>(
    text: &str,
    cx: &Context<'_>,
) -> Result<PolytomicEvent<T>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    EnvelopeSeed::<T>::new(cx)
        .deserialize(&mut deserializer)
        .and_then(|event| deserializer.end().map(|()| event))
}

/// The `invalid_json` rejection for a body that is not UTF-8, located where serde_json finds it
/// (reading every string, building nothing).
#[cold]
pub(crate) fn not_utf8(body: &[u8]) -> EventRejection {
    let error = syntax_error(body)
        .unwrap_or_else(|| serde::de::Error::custom("the body is not valid UTF-8"));
    InvalidJson::new(error).into()
}

/// The first syntax error in `body`, found by a pass that decodes every string (unlike
/// `IgnoredAny`), so a lone surrogate escape that raw text kept is found where a parse into
/// `String` finds it.
#[cold]
pub(crate) fn syntax_error(body: &[u8]) -> Option<serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    Skim::deserialize(&mut deserializer)
        .and_then(|_| deserializer.end())
        .err()
}

/// Reads any JSON value and keeps nothing. Unlike `IgnoredAny`, it has serde_json read each
/// string (which checks its UTF-8) rather than skip it.
struct Skim;

impl<'de> serde::Deserialize<'de> for Skim {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Skim)
    }
}

impl<'de> serde::de::Visitor<'de> for Skim {
    type Value = Skim;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_unit<E>(self) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skim, A::Error> {
        while seq.next_element::<Skim>()?.is_some() {}
        Ok(Skim)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skim, A::Error> {
        while map.next_entry::<Skim, Skim>()?.is_some() {}
        Ok(Skim)
    }
}

/// Parses a delivery that must be a `sync.records` batch, for use without axum.
///
/// Like [`parse`], but an unknown event type is an [`EventRejection::UnknownEvent`] whose
/// response follows [`EventConfig::unknown_events`] (200 acknowledgement by default), exactly
/// as the [`SyncRecords`] extractor answers.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, Fields, SyncRecords, parse_sync_records};
///
/// let body = br#"{"event":"sync.records","object":{
///     "id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7","name":"Users","records":[]}}"#;
/// let batch: SyncRecords<Fields> = parse_sync_records(body, &EventConfig::default()).unwrap();
/// assert!(batch.is_empty());
/// ```
pub fn parse_sync_records<T: DeserializeOwned>(
    body: &[u8],
    config: &EventConfig,
) -> Result<SyncRecords<T>, EventRejection> {
    parse_sync_records_shared(&Bytes::copy_from_slice(body), config)
}

/// [`parse_sync_records`] over a body already in a shared buffer.
pub(crate) fn parse_sync_records_shared<T: DeserializeOwned>(
    body: &Bytes,
    config: &EventConfig,
) -> Result<SyncRecords<T>, EventRejection> {
    only_sync_records(parse_shared(body, config)?, config)
}

/// The batch of a `sync.records` event; any other event is refused as
/// [`EventConfig::unknown_events`] says.
pub(crate) fn only_sync_records<T>(
    event: PolytomicEvent<T>,
    config: &EventConfig,
) -> Result<SyncRecords<T>, EventRejection> {
    match event {
        PolytomicEvent::SyncRecords(batch) => Ok(batch),
        PolytomicEvent::Unknown { event, .. } => Err(unknown_event(&event, config).into()),
    }
}

fn unknown_event(event: &str, config: &EventConfig) -> UnknownEvent {
    let acknowledged = match config.unknown_events {
        UnknownEventPolicy::Acknowledge => true,
        UnknownEventPolicy::Reject => false,
    };
    let unknown = UnknownEvent::new(event, acknowledged);
    if acknowledged {
        tracing::info!(
            event = ?unknown.event(),
            "acknowledged a Polytomic event of an unknown type without running the handler"
        );
    } else {
        tracing::info!(
            event = ?unknown.event(),
            "rejected a Polytomic event of an unknown type"
        );
    }
    unknown
}

thread_local! {
    static SLOW_PATH_RUNS: Cell<usize> = const { Cell::new(0) };
}

/// How many times this thread has taken the slow path (explaining a failed parse). A test hook
/// (feature `testing`): valid input must leave it unchanged.
#[cfg(feature = "testing")]
pub fn slow_path_runs() -> usize {
    SLOW_PATH_RUNS.with(Cell::get)
}

/// The slow path: turns a failed fast parse into the rejection that says what is wrong and where.
#[cold]
fn explain<T: DeserializeOwned>(
    body: &[u8],
    config: &EventConfig,
    error: serde_json::Error,
    failure: Failure,
) -> EventRejection {
    SLOW_PATH_RUNS.with(|runs| runs.set(runs.get() + 1));
    if is_too_deep(&error) {
        // Found while reading a part, or by serde_json itself; located over the whole body,
        // the way the limit counts.
        let limit = config.max_depth.min(MAX_DEPTH);
        if let Some(at) = too_deep_at(body, limit) {
            return InvalidJson::too_deep(limit, body, at).into();
        }
    }
    if is_out_of_range(&error) {
        // Valid JSON that no float holds (`1e400`): serde_json refuses to build it, which is
        // the inexact-number case, so the pass that checks numbers finds and locates it.
        let cx = Context::new(config, false).checking_numbers();
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let checked = EnvelopeSeed::<T>::new(&cx).deserialize(&mut deserializer);
        let failure = cx.into_failure();
        if let (Err(_), FailureKind::InexactNumber(name)) = (checked, &failure.kind) {
            return inexact_number(&failure, name);
        }
    }
    if is_malformed(&error) {
        return InvalidJson::new(error).into();
    }
    match failure.kind {
        FailureKind::TooManyRecords => return TooManyRecords::new(config.max_records).into(),
        FailureKind::HeapBudget => {
            let limit = u64::try_from(config.max_heap_bytes).unwrap_or(u64::MAX);
            return BodyTooLarge::new(TooLargeLimit::Heap(limit)).into();
        }
        FailureKind::InexactNumber(ref name) => return inexact_number(&failure, name),
        _ => {}
    }
    // serde stops at the first error, which may be a data error in front of a syntax error;
    // a body that is not JSON at all is reported as such.
    if let Some(syntax) = syntax_error(body) {
        return InvalidJson::new(syntax).into();
    }
    let text = message(&error);
    if let Some(name) = duplicate_name(&text) {
        return DuplicateFieldName::new(format!("{}.{name}", render(&failure.path)), name).into();
    }
    match failure.kind {
        FailureKind::Collision(collision) => FieldNameCollision::new(
            render(&failure.path),
            collision.first,
            collision.second,
            collision.normalized,
        )
        .into(),
        FailureKind::RecordFields => {
            // Only now pay for tracking where inside `fields` the type gave up.
            let cx = Context::new(config, true);
            let mut deserializer = serde_json::Deserializer::from_slice(body);
            let tracked = EnvelopeSeed::<T>::new(&cx).deserialize(&mut deserializer);
            let failure = cx.into_failure();
            match tracked {
                Err(tracked) if matches!(failure.kind, FailureKind::RecordFields) => {
                    InvalidRecordFields::new(render(&failure.path), message(&tracked)).into()
                }
                // Parsing is deterministic, so this is the same failure; keep the first account.
                _ => InvalidRecordFields::new(render(&failure.path), message(&error)).into(),
            }
        }
        FailureKind::Envelope
        | FailureKind::TooManyRecords
        | FailureKind::HeapBudget
        | FailureKind::InexactNumber(_) => {
            InvalidEnvelope::new(render(&failure.path), message(&error)).into()
        }
    }
}

/// The 422 `inexact_number` rejection for the record member `name` that `failure` located.
fn inexact_number(failure: &Failure, name: &str) -> EventRejection {
    InexactNumber::new(format!("{}.{name}", render(&failure.path))).into()
}

/// Whether the parse stopped at nesting past the depth limit: this crate's, or serde_json's own.
fn is_too_deep(error: &serde_json::Error) -> bool {
    let text = error.to_string();
    let text = strip_position(&text);
    text == TOO_DEEP || (error.classify() == Category::Syntax && text == "recursion limit exceeded")
}

/// Whether serde_json refused a number because no float holds it: a syntax error to serde_json,
/// but valid JSON (RFC 8259 sets no range).
fn is_out_of_range(error: &serde_json::Error) -> bool {
    error.classify() == Category::Syntax
        && strip_position(&error.to_string()) == "number out of range"
}

pub(crate) fn is_malformed(error: &serde_json::Error) -> bool {
    matches!(
        error.classify(),
        Category::Syntax | Category::Eof | Category::Io
    )
}

/// serde_json's message without the position suffix (a JSON path replaces it) and without any
/// value it quotes.
pub(crate) fn message(error: &serde_json::Error) -> String {
    sanitize(error)
}

/// Renders the segments recorded while an error unwound (innermost first) as a JSON path.
fn render(segments: &[Segment]) -> String {
    let mut path = String::new();
    for segment in segments.iter().rev() {
        match segment {
            Segment::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Index(index) => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
            Segment::Inner(inner) => {
                // serde_path_to_error renders the empty path as ".".
                if inner == "." {
                    continue;
                }
                if !path.is_empty() && !inner.starts_with('[') {
                    path.push('.');
                }
                path.push_str(inner);
            }
        }
    }
    path
}
