//! Why a delivery was refused, one type per failure, composed into [`EventRejection`].
//!
//! Every rejection answers with an `application/problem+json` body rendered by
//! [`polytomic_webhook_core::Problem`], whose `code` member is stable:
//!
//! | status | `code` | type |
//! | --- | --- | --- |
//! | 415 | `unsupported_media_type` | [`UnsupportedMediaType`] |
//! | 413 | `body_too_large` | [`BodyTooLarge`] |
//! | 400 | `invalid_compressed_body` | [`InvalidCompressedBody`] |
//! | 400 | `body_read_failed` | [`BodyReadFailed`] |
//! | 408 | `body_timeout` | [`BodyTimeout`] |
//! | 400 | `invalid_json` | [`InvalidJson`] |
//! | 422 | `invalid_envelope` | [`InvalidEnvelope`] (with `path`) |
//! | 422 | `invalid_record_fields` | [`InvalidRecordFields`] (with `path`) |
//! | 422 | `duplicate_field_name` | [`DuplicateFieldName`] (with `path`) |
//! | 422 | `inexact_number` | [`InexactNumber`] (with `path`) |
//! | 413 | `too_many_records` | [`TooManyRecords`] |
//! | 422 | `field_name_collision` | [`FieldNameCollision`] (with `path`) |
//! | 422 or 200 | `unknown_event` | [`UnknownEvent`] |
//! | 500 | `layer_missing` | [`LayerMissing`] |
//!
//! [`UnknownEvent`] is the exception: under the default
//! [`UnknownEventPolicy::Acknowledge`](crate::UnknownEventPolicy::Acknowledge) it answers
//! 200 with `{"ignored_event":"<name>"}`, so Polytomic counts the delivery as received.

use std::error::Error;
use std::fmt;

use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use polytomic_webhook_core::body::{BodyErrorKind, BodyStats, BoxError};
use polytomic_webhook_core::problem::{Problem, bounded};
use polytomic_webhook_core::{__composite_rejection, __define_rejection};

use crate::admitted::Gate;

/// Corrupt compressed data is answered with the decoding body's own error type.
pub use polytomic_webhook_core::body::InvalidCompressedBody;

/// The request's `Content-Type` is missing or is not JSON (415 `unsupported_media_type`).
///
/// `application/json` and `application/<anything>+json` are accepted, with parameters such as
/// `charset=utf-8`, in any letter case.
///
/// ```
/// use polytomic_webhook_event::rejection::UnsupportedMediaType;
///
/// # let rejection = UnsupportedMediaType::missing();
/// assert_eq!(rejection.status(), 415);
/// assert_eq!(rejection.code(), "unsupported_media_type");
/// ```
#[derive(Debug)]
pub struct UnsupportedMediaType {
    received: Received,
}

/// What the request said its body was, as far as the answer repeats it.
#[derive(Debug)]
enum Received {
    Missing,
    /// A form type: what `curl -d` sends unless told otherwise.
    Form(&'static str),
    /// Another type, by its essence when that is a plain media type.
    Other(Option<String>),
}

impl UnsupportedMediaType {
    /// The request had no `Content-Type`.
    pub fn missing() -> Self {
        Self {
            received: Received::Missing,
        }
    }

    /// The request's `Content-Type` is not JSON.
    pub fn not_json() -> Self {
        Self {
            received: Received::Other(None),
        }
    }

    /// The request's `Content-Type` is `essence` (its type and subtype, parameters left out),
    /// which is not JSON.
    pub(crate) fn received(essence: &str) -> Self {
        const FORMS: [&str; 2] = ["application/x-www-form-urlencoded", "multipart/form-data"];
        if let Some(form) = FORMS.iter().find(|form| form.eq_ignore_ascii_case(essence)) {
            return Self {
                received: Received::Form(form),
            };
        }
        // Repeated only when it looks like a media type: the answer never carries arbitrary text
        // from the request.
        let plain = essence.len() <= 100
            && essence.split_once('/').is_some_and(|(kind, subtype)| {
                !kind.is_empty()
                    && !subtype.is_empty()
                    && essence
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"/!#$&-^_.+".contains(&byte))
            });
        Self {
            received: Received::Other(plain.then(|| essence.to_ascii_lowercase())),
        }
    }

    fn detail(&self) -> String {
        const FIX: &str = "send the body with Content-Type: application/json";
        match &self.received {
            Received::Missing => format!("the request has no Content-Type; {FIX}"),
            Received::Form(form) => format!(
                "the request's Content-Type is {form}, a form type (what `curl -d` sends unless \
                 told otherwise), not JSON; {FIX} (curl: -H 'Content-Type: application/json')"
            ),
            Received::Other(Some(essence)) => {
                format!("the request's Content-Type is {essence}, not JSON; {FIX}")
            }
            Received::Other(None) => {
                format!("the request's Content-Type is not a JSON media type; {FIX}")
            }
        }
    }
}

__define_rejection!(UnsupportedMediaType: UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

/// The extractor ran on a request the composed layer did not admit (500 `layer_missing`):
/// the router is wired so that the layer does not wrap the route, and nothing authenticated
/// the request.
///
/// The extractors fail closed rather than parse such a request; an `error` log line says how
/// to fix the router. To parse without the layer on purpose (a pipeline of your own that
/// authenticates first), use [`WithoutLayer`](crate::WithoutLayer),
/// [`read_without_layer`](crate::read_without_layer) or
/// [`read_event_without_layer`](crate::read_event_without_layer).
///
/// ```
/// use axum::{Router, routing::post};
/// use polytomic_webhook_event::{Ack, SyncRecords};
/// use tower::ServiceExt;
///
/// async fn receive(batch: SyncRecords) -> Ack {
///     Ack::from(&batch)
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // No layer admitted the request: refused, never parsed.
/// let app: Router = Router::new().route("/", post(receive));
/// let request = http::Request::post("/")
///     .header("content-type", "application/json")
///     .body(axum::body::Body::from("{}"))
///     .unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 500);
/// # });
/// ```
#[derive(Debug)]
pub struct LayerMissing {
    gate: Gate,
}

impl LayerMissing {
    pub(crate) fn new(gate: Gate) -> Self {
        Self { gate }
    }

    fn detail(&self) -> String {
        let (_, layer, _) = self.gate.names();
        format!(
            "the server's route is not behind {layer}, so the request was not authenticated \
             and is refused unread; the server's operator must put the layer around the route \
             (its error log says how)"
        )
    }
}

__define_rejection!(LayerMissing: INTERNAL_SERVER_ERROR, "layer_missing");

/// Which limit stopped a body (shared with the layers, so every 413 reads the same).
pub use polytomic_webhook_core::body::TooLargeLimit;

/// The body is larger than a limit allows (413 `body_too_large`).
///
/// The `detail` names the limit that fired, and a `limit` member says which kind it was
/// (`compressed`, `decompressed`, `ratio`, `extractor` or `body`).
///
/// ```
/// use polytomic_webhook_event::rejection::{BodyTooLarge, TooLargeLimit};
///
/// let rejection = BodyTooLarge::new(TooLargeLimit::Extractor(1024));
/// assert_eq!(rejection.status(), 413);
/// assert!(rejection.body_text().contains("1024"));
/// ```
#[derive(Debug)]
pub struct BodyTooLarge {
    limit: TooLargeLimit,
    source: Option<BoxError>,
}

impl BodyTooLarge {
    /// A rejection for the given limit.
    pub fn new(limit: TooLargeLimit) -> Self {
        Self {
            limit,
            source: None,
        }
    }

    pub(crate) fn with_source(limit: TooLargeLimit, source: BoxError) -> Self {
        Self {
            limit,
            source: Some(source),
        }
    }

    /// The limit that fired.
    pub fn limit(&self) -> TooLargeLimit {
        self.limit
    }

    fn detail(&self) -> String {
        self.limit.detail()
    }

    fn with_members(&self, problem: Problem) -> Problem {
        problem.with_member("limit", self.limit.kind())
    }
}

__define_rejection!(BodyTooLarge: PAYLOAD_TOO_LARGE, "body_too_large", source = source,
    problem = Self::with_members);

/// Reading the body failed for another reason, such as a reset connection
/// (400 `body_read_failed`).
///
/// ```
/// use polytomic_webhook_event::rejection::BodyReadFailed;
///
/// assert_eq!(BodyReadFailed::CODE, "body_read_failed");
/// ```
#[derive(Debug)]
pub struct BodyReadFailed {
    source: BoxError,
}

impl BodyReadFailed {
    pub(crate) fn new(source: BoxError) -> Self {
        Self { source }
    }

    fn detail(&self) -> String {
        bounded(format!(
            "the request body could not be read: {}",
            self.source
        ))
    }
}

__define_rejection!(BodyReadFailed: BAD_REQUEST, "body_read_failed", source = source);

/// The body did not arrive within the deadline set by the composed layer's `body_timeout`
/// (408 `body_timeout`). The connection should not be reused: the rest of the body may still
/// be on its way.
///
/// ```
/// use polytomic_webhook_event::rejection::BodyTimeout;
///
/// assert_eq!(BodyTimeout::CODE, "body_timeout");
/// ```
#[derive(Debug)]
pub struct BodyTimeout {
    source: BoxError,
}

impl BodyTimeout {
    pub(crate) fn new(source: BoxError) -> Self {
        Self { source }
    }

    fn detail(&self) -> String {
        bounded(self.source.to_string())
    }

    fn with_members(&self, problem: Problem) -> Problem {
        problem.with_header(http::header::CONNECTION, HeaderValue::from_static("close"))
    }
}

__define_rejection!(BodyTimeout: REQUEST_TIMEOUT, "body_timeout", source = source,
    problem = Self::with_members);

/// The body is not well-formed JSON: a syntax error, invalid UTF-8, trailing data, truncation,
/// or objects and arrays nested deeper than [`EventConfig::max_depth`](crate::EventConfig::max_depth)
/// allows, whatever the record type (400 `invalid_json`).
///
/// The `detail` gives the line and column; `line` and `column` members carry them too.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, Fields, parse};
/// use polytomic_webhook_event::rejection::EventRejection;
///
/// let error = parse::<Fields>(b"{\"event\": ", &EventConfig::default()).unwrap_err();
/// let EventRejection::InvalidJson(error) = error else { unreachable!() };
/// assert_eq!((error.line(), error.column()), (1, 10));
/// ```
#[derive(Debug)]
pub struct InvalidJson {
    source: serde_json::Error,
    line: usize,
    column: usize,
}

impl InvalidJson {
    pub(crate) fn new(source: serde_json::Error) -> Self {
        let (line, column) = (source.line(), source.column());
        Self {
            source,
            line,
            column,
        }
    }

    /// Nesting past `limit` levels, at the `{` or `[` at byte `at` of `body`: located as
    /// serde_json locates its own errors (lines counted by `\n`, columns in bytes).
    pub(crate) fn too_deep(limit: usize, body: &[u8], at: usize) -> Self {
        let before = &body[..at];
        let line_start = before
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |newline| newline + 1);
        let line = 1 + before[..line_start]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count();
        Self {
            source: serde::de::Error::custom(format_args!(
                "objects and arrays nested more than {limit} deep"
            )),
            line,
            column: at - line_start + 1,
        }
    }

    /// The line (1-based) where the JSON stops being valid.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column (1-based) where the JSON stops being valid.
    pub fn column(&self) -> usize {
        self.column
    }

    fn detail(&self) -> String {
        // serde_json's message ends with "at line L column C", which is said here for every
        // error alike (a custom one, with line 0, has no place).
        let text = self.source.to_string();
        let message = crate::sanitize::strip_position(&text);
        if self.line == 0 {
            return format!("the request body is not valid JSON: {message}");
        }
        format!(
            "the request body is not valid JSON: {message} at line {} column {}",
            self.line, self.column
        )
    }

    fn with_members(&self, problem: Problem) -> Problem {
        problem
            .with_member("line", self.line())
            .with_member("column", self.column())
    }
}

__define_rejection!(InvalidJson: BAD_REQUEST, "invalid_json", source = source,
    problem = Self::with_members);

/// A 422 rejection located by a JSON path: its `path()`, its `detail` ("what at `path`:
/// message") and its `path` member. With `serde`, also the constructor and `message()` of a
/// rejection that carries serde's description.
macro_rules! located_rejection {
    ($name:ident, $what:literal, $code:literal, serde) => {
        impl $name {
            pub(crate) fn new(path: String, message: String) -> Self {
                Self {
                    at: Located::new(path, message),
                }
            }

            /// serde's description of the problem.
            pub fn message(&self) -> &str {
                &self.at.message
            }
        }

        located_rejection!($name, $what, $code);
    };
    ($name:ident, $what:literal, $code:literal) => {
        impl $name {
            /// The JSON path of the problem.
            pub fn path(&self) -> &str {
                &self.at.path
            }

            fn detail(&self) -> String {
                self.at.describe($what)
            }

            fn with_members(&self, problem: Problem) -> Problem {
                problem.with_member("path", self.at.path.clone())
            }
        }

        __define_rejection!($name: UNPROCESSABLE_ENTITY, $code, problem = Self::with_members);
    };
}

/// Where in the body a problem is, and serde's description of it.
#[derive(Debug)]
struct Located {
    path: String,
    message: String,
}

impl Located {
    fn new(path: String, message: String) -> Self {
        Self {
            path: bounded(path),
            message: bounded(message),
        }
    }

    fn describe(&self, what: &str) -> String {
        if self.path.is_empty() {
            format!("{what}: {}", self.message)
        } else {
            format!("{what} at `{}`: {}", self.path, self.message)
        }
    }
}

/// Well-formed JSON that is not a valid Polytomic envelope: a missing or mistyped `event`,
/// `object`, `id`, `name`, `records`, `hash` or `fields`, a sync id that is not a UUID, or
/// `metadata` that is not an object (422 `invalid_envelope`).
///
/// The `path` member locates the first problem, e.g. `object.records[3].hash` (empty for the
/// top level).
///
/// ```
/// use polytomic_webhook_event::{EventConfig, Fields, parse};
/// use polytomic_webhook_event::rejection::EventRejection;
///
/// let body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
///     "name":"n","records":[{"fields":{}}]}}"#;
/// let EventRejection::InvalidEnvelope(error) = parse::<Fields>(body, &EventConfig::default())
///     .unwrap_err() else { unreachable!() };
/// assert_eq!(error.path(), "object.records[0]");
/// assert!(error.message().contains("hash"));
/// ```
#[derive(Debug)]
pub struct InvalidEnvelope {
    at: Located,
}

located_rejection!(
    InvalidEnvelope,
    "invalid webhook envelope",
    "invalid_envelope",
    serde
);

/// A record's `fields` object does not deserialize into the handler's type `T`
/// (422 `invalid_record_fields`).
///
/// The `path` member points inside the record, e.g. `object.records[3].fields.email`.
///
/// ```
/// use polytomic_webhook_event::rejection::InvalidRecordFields;
///
/// assert_eq!(InvalidRecordFields::CODE, "invalid_record_fields");
/// ```
#[derive(Debug)]
pub struct InvalidRecordFields {
    at: Located,
}

located_rejection!(
    InvalidRecordFields,
    "invalid record fields",
    "invalid_record_fields",
    serde
);

/// A member name appears twice in one record's `fields` or in `metadata`
/// (422 `duplicate_field_name`).
///
/// JSON leaves the meaning of a repeated name open, and every reader resolves it its own way
/// (most keep the last value), so such a record is refused rather than guessed at. The `path`
/// member names the second occurrence, e.g. `object.records[3].fields.email`.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, parse_sync_records};
/// use polytomic_webhook_event::rejection::EventRejection;
///
/// let body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
///     "name":"n","records":[{"hash":"h","fields":{"email":"a","email":"b"}}]}}"#;
/// let rejection = parse_sync_records::<polytomic_webhook_event::RawFields>(body, &EventConfig::default())
///     .unwrap_err();
/// assert_eq!(rejection.status(), 422);
/// assert_eq!(rejection.code(), "duplicate_field_name");
/// let EventRejection::DuplicateFieldName(rejection) = rejection else { unreachable!() };
/// assert_eq!(rejection.path(), "object.records[0].fields.email");
/// ```
#[derive(Debug)]
pub struct DuplicateFieldName {
    at: Located,
}

impl DuplicateFieldName {
    pub(crate) fn new(path: String, name: &str) -> Self {
        Self {
            at: Located::new(path, format!("the name `{name}` appears more than once")),
        }
    }
}

located_rejection!(
    DuplicateFieldName,
    "duplicate field name",
    "duplicate_field_name"
);

/// A record's `fields` hold a number that the record type would change: an integer beyond 64
/// bits, a decimal with more digits than an `f64` keeps, or one beyond its range (`1e400`,
/// `1e-400`) (422 `inexact_number`).
///
/// Only record types that build numbers ([`Fields`](crate::Fields), your own types) are checked;
/// [`RawFields`](crate::RawFields), the default, keeps every number's text exactly. The `path`
/// member names the field, e.g. `object.records[3].fields.id`; the number itself is never echoed.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, Fields, RawFields, parse_sync_records};
///
/// let body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
///     "name":"n","records":[{"hash":"h","fields":{"id":18446744073709551616}}]}}"#;
/// let rejection = parse_sync_records::<Fields>(body, &EventConfig::default()).unwrap_err();
/// assert_eq!(rejection.status(), 422);
/// assert_eq!(rejection.code(), "inexact_number");
/// // The default keeps it as sent.
/// let batch = parse_sync_records::<RawFields>(body, &EventConfig::default()).unwrap();
/// assert_eq!(batch.records()[0].fields().get("id").unwrap().get(), "18446744073709551616");
/// ```
#[derive(Debug)]
pub struct InexactNumber {
    at: Located,
}

impl InexactNumber {
    pub(crate) fn new(path: String) -> Self {
        Self {
            at: Located::new(
                path,
                "the number has more digits or range than the record type holds; receive the \
                 fields as RawFields to keep it exactly"
                    .to_owned(),
            ),
        }
    }
}

located_rejection!(InexactNumber, "inexact number", "inexact_number");

/// The batch has more records than
/// [`EventConfig::max_records`](crate::EventConfig::max_records) (413 `too_many_records`).
///
/// ```
/// use polytomic_webhook_event::rejection::TooManyRecords;
///
/// assert_eq!(TooManyRecords::CODE, "too_many_records");
/// ```
#[derive(Debug)]
pub struct TooManyRecords {
    max: usize,
}

impl TooManyRecords {
    pub(crate) fn new(max: usize) -> Self {
        Self { max }
    }

    /// The configured maximum.
    pub fn max_records(&self) -> usize {
        self.max
    }

    fn detail(&self) -> String {
        format!("the batch has more than the allowed {} records", self.max)
    }

    fn with_members(&self, problem: Problem) -> Problem {
        problem
            .with_member("path", "object.records")
            .with_member("max_records", self.max)
    }
}

__define_rejection!(TooManyRecords: PAYLOAD_TOO_LARGE, "too_many_records",
    problem = Self::with_members);

/// With field-name normalisation on, two fields of one record normalise to the same name
/// (422 `field_name_collision`).
///
/// ```
/// use polytomic_webhook_event::{EventConfig, Fields, parse};
/// use polytomic_webhook_event::rejection::EventRejection;
///
/// let body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
///     "name":"n","records":[{"hash":"h","fields":{"$first_name":"a","first_name":"b"}}]}}"#;
/// let config = EventConfig::default().normalize_field_names(true);
/// let EventRejection::FieldNameCollision(error) = parse::<Fields>(body, &config).unwrap_err()
/// else { unreachable!() };
/// assert_eq!(error.normalized(), "first_name");
/// ```
#[derive(Debug)]
pub struct FieldNameCollision {
    path: String,
    first: String,
    second: String,
    normalized: String,
}

impl FieldNameCollision {
    pub(crate) fn new(path: String, first: String, second: String, normalized: String) -> Self {
        Self {
            path,
            first: bounded(first),
            second: bounded(second),
            normalized: bounded(normalized),
        }
    }

    /// The path of the record's `fields`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The two original field names.
    pub fn originals(&self) -> (&str, &str) {
        (&self.first, &self.second)
    }

    /// The name both normalise to.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    fn detail(&self) -> String {
        format!(
            "the fields `{}` and `{}` at `{}` both normalise to `{}`",
            self.first, self.second, self.path, self.normalized
        )
    }

    fn with_members(&self, problem: Problem) -> Problem {
        problem.with_member("path", self.path.clone()).with_member(
            "fields",
            serde_json::json!([self.first.clone(), self.second.clone()]),
        )
    }
}

__define_rejection!(FieldNameCollision: UNPROCESSABLE_ENTITY, "field_name_collision",
    problem = Self::with_members);

/// The [`SyncRecords`](crate::SyncRecords) extractor received an event type it does not know.
///
/// Under [`UnknownEventPolicy::Acknowledge`](crate::UnknownEventPolicy::Acknowledge) (the
/// default) this is not an error for the sender: the response is 200 with
/// `{"ignored_event":"<name>"}` and the handler does not run. Under
/// [`UnknownEventPolicy::Reject`](crate::UnknownEventPolicy::Reject) it is 422
/// `unknown_event`.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, Fields, UnknownEventPolicy, parse_sync_records};
/// use polytomic_webhook_event::rejection::EventRejection;
///
/// let body = br#"{"event":"sync.future_thing","object":{}}"#;
/// let EventRejection::UnknownEvent(ack) =
///     parse_sync_records::<Fields>(body, &EventConfig::default()).unwrap_err()
/// else { unreachable!() };
/// assert!(ack.is_acknowledged());
/// assert_eq!(ack.status(), 200);
/// assert_eq!(ack.body_text(), r#"{"ignored_event":"sync.future_thing"}"#);
///
/// let config = EventConfig::default().unknown_events(UnknownEventPolicy::Reject);
/// let EventRejection::UnknownEvent(rejection) =
///     parse_sync_records::<Fields>(body, &config).unwrap_err()
/// else { unreachable!() };
/// assert_eq!(rejection.status(), 422);
/// ```
#[derive(Debug)]
pub struct UnknownEvent {
    event: String,
    acknowledged: bool,
}

impl UnknownEvent {
    /// The stable `code` of the problem body under the reject policy.
    pub const CODE: &'static str = "unknown_event";

    pub(crate) fn new(event: &str, acknowledged: bool) -> Self {
        Self {
            event: bounded(event.to_owned()),
            acknowledged,
        }
    }

    /// The event name (cut to 1 KiB).
    pub fn event(&self) -> &str {
        &self.event
    }

    /// Whether the response acknowledges the delivery (200) rather than rejecting it (422).
    pub fn is_acknowledged(&self) -> bool {
        self.acknowledged
    }

    /// 200 when acknowledged, 422 otherwise.
    pub fn status(&self) -> StatusCode {
        if self.acknowledged {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }

    /// `unknown_event`.
    pub fn code(&self) -> &'static str {
        Self::CODE
    }

    /// The acknowledgement's JSON body, or the problem's `detail`.
    pub fn body_text(&self) -> String {
        if self.acknowledged {
            self.ack_json()
        } else {
            self.detail()
        }
    }

    fn ack_json(&self) -> String {
        serde_json::json!({ "ignored_event": self.event }).to_string()
    }

    fn detail(&self) -> String {
        format!(
            "the event type `{}` is not handled by this endpoint",
            self.event
        )
    }

    /// The problem this rejection answers with under the reject policy.
    pub fn to_problem(&self) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, Self::CODE, self.detail())
            .with_member("event", self.event.clone())
    }
}

impl IntoResponse for UnknownEvent {
    fn into_response(self) -> Response {
        if self.acknowledged {
            let mut response =
                Response::new(axum_core::body::Body::from(Bytes::from(self.ack_json())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
                .extensions_mut()
                .insert(IgnoredEvent(self.event.clone()));
            response
        } else {
            self.to_problem().into_response()
        }
    }
}

/// Response extension marking an acknowledged delivery of an unknown event type, so outer
/// middleware can log the outcome as `ignored_event` rather than `accepted`.
///
/// ```
/// use axum_core::response::IntoResponse;
/// use polytomic_webhook_event::rejection::{EventRejection, IgnoredEvent};
/// use polytomic_webhook_event::{EventConfig, Fields, parse_sync_records};
///
/// let body = br#"{"event":"sync.future_thing","object":{}}"#;
/// let rejection = parse_sync_records::<Fields>(body, &EventConfig::default()).unwrap_err();
/// let response = rejection.into_response();
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.extensions().get::<IgnoredEvent>().unwrap().event(), "sync.future_thing");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredEvent(String);

impl IgnoredEvent {
    /// The event type that was acknowledged without running the handler.
    pub fn event(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnknownEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail())
    }
}

impl Error for UnknownEvent {}

polytomic_webhook_core::__rejection_trait!(UnknownEvent);

__composite_rejection! {
    /// Every way the extractor or [`parse`](crate::parse) can refuse a delivery.
    ///
    /// ```
    /// use polytomic_webhook_event::{EventConfig, Fields, parse};
    ///
    /// let error = parse::<Fields>(b"[]", &EventConfig::default()).unwrap_err();
    /// assert_eq!(error.status(), 422);
    /// assert_eq!(error.code(), "invalid_envelope");
    /// ```
    #[derive(Debug)]
    #[non_exhaustive]
    pub enum EventRejection {
        /// See [`UnsupportedMediaType`].
        UnsupportedMediaType(UnsupportedMediaType),
        /// See [`BodyTooLarge`].
        BodyTooLarge(BodyTooLarge),
        /// See [`InvalidCompressedBody`].
        InvalidCompressedBody(InvalidCompressedBody),
        /// See [`BodyReadFailed`].
        BodyReadFailed(BodyReadFailed),
        /// See [`BodyTimeout`].
        BodyTimeout(BodyTimeout),
        /// See [`InvalidJson`].
        InvalidJson(InvalidJson),
        /// See [`InvalidEnvelope`].
        InvalidEnvelope(InvalidEnvelope),
        /// See [`InvalidRecordFields`].
        InvalidRecordFields(InvalidRecordFields),
        /// See [`DuplicateFieldName`].
        DuplicateFieldName(DuplicateFieldName),
        /// See [`InexactNumber`].
        InexactNumber(InexactNumber),
        /// See [`TooManyRecords`].
        TooManyRecords(TooManyRecords),
        /// See [`FieldNameCollision`].
        FieldNameCollision(FieldNameCollision),
        /// See [`UnknownEvent`].
        UnknownEvent(UnknownEvent),
        /// See [`LayerMissing`].
        LayerMissing(LayerMissing),
    }
}

impl EventRejection {
    /// The rejection for an error met while reading a request body, for code that reads the
    /// body itself before calling [`parse`](crate::parse) (plain hyper, say).
    ///
    /// A size limit becomes 413 `body_too_large` (naming the decompression layer's limit when
    /// `stats`, the request's [`BodyStats`] extension, recorded one), corrupt compressed data
    /// 400 `invalid_compressed_body`, anything else 400 `body_read_failed`: the answers the
    /// extractors give.
    ///
    /// ```
    /// use polytomic_webhook_core::body::length_limit_error;
    /// use polytomic_webhook_event::rejection::EventRejection;
    ///
    /// let rejection = EventRejection::from_body_error(length_limit_error(), None);
    /// assert_eq!(rejection.status(), 413);
    /// assert_eq!(rejection.code(), "body_too_large");
    /// ```
    ///
    /// [`BodyStats`]: polytomic_webhook_core::body::BodyStats
    pub fn from_body_error(error: impl Into<BoxError>, stats: Option<&BodyStats>) -> Self {
        let error = error.into();
        match BodyErrorKind::of(&*error) {
            BodyErrorKind::LengthLimit => {
                BodyTooLarge::with_source(TooLargeLimit::from_stats(stats), error).into()
            }
            BodyErrorKind::InvalidCompressedBody => InvalidCompressedBody::reading(error).into(),
            BodyErrorKind::Timeout => BodyTimeout::new(error).into(),
            _ => BodyReadFailed::new(error).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn a_corrupt_body_is_the_one_invalid_compressed_body_keeping_the_whole_chain() {
        let decoder = InvalidCompressedBody::new("zstd", io::Error::other("bad frame"));
        let wrapped: BoxError = Box::new(axum_core::Error::new(decoder));
        let rejection = EventRejection::from_body_error(wrapped, None);
        assert_eq!(
            (rejection.status(), rejection.code()),
            (StatusCode::BAD_REQUEST, "invalid_compressed_body")
        );
        assert_eq!(
            rejection.body_text(),
            "the request body could not be decompressed: \
             the zstd request body is corrupt or truncated: bad frame"
        );
        // The composite skips its leaf: its source is the body error the reader met.
        assert!(rejection.source().unwrap().is::<axum_core::Error>());
        let EventRejection::InvalidCompressedBody(leaf) = rejection else {
            panic!("not invalid_compressed_body");
        };
        assert_eq!(leaf.coding(), "zstd");
    }
}
