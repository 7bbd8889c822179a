//! RFC 9457 problem details, the one format every rejection in the stack uses.
//!
//! A [`Problem`] carries the HTTP status, a stable snake_case `code` that clients can switch on,
//! a human-readable `detail`, optional extension members (such as the JSON `path` of an invalid
//! field) and any response headers the rejection needs (`WWW-Authenticate`, `Accept-Encoding`).
//!
//! The serialized body always has the members `type`, `title`, `status`, `detail` and `code`:
//!
//! ```json
//! {"type":"about:blank","title":"Payload Too Large","status":413,
//!  "detail":"the decompressed body exceeds the limit of 33554432 bytes","code":"body_too_large"}
//! ```
//!
//! `type` is `about:blank` and `title` is the status phrase, as RFC 9457 §4.2.1 asks when a problem
//! adds no semantics beyond its status; the machine-readable distinction lives in `code`, which is
//! part of this crate's stability promise.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value};

/// The media type of a problem body, `application/problem+json`.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: what a rejection tells the client, and how.
///
/// ```
/// use http::StatusCode;
/// use polytomic_webhook_core::problem::{PROBLEM_JSON, Problem, ProblemCode};
///
/// let problem = Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "too big")
///     .with_member("limit", 1024);
/// let response = problem.to_response();
/// assert_eq!(response.status(), 413);
/// assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
/// assert_eq!(response.extensions().get::<ProblemCode>().unwrap().as_str(), "body_too_large");
///
/// let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
/// assert_eq!(body["code"], "body_too_large");
/// assert_eq!(body["limit"], 1024);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: Cow<'static, str>,
    members: Map<String, Value>,
    headers: HeaderMap,
}

impl Problem {
    /// A problem with the given status, stable `code` and human-readable `detail`.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            members: Map::new(),
            headers: HeaderMap::new(),
        }
    }

    /// Adds an extension member to the body (for example `path`).
    ///
    /// The standard members (`type`, `title`, `status`, `detail`, `code`) cannot be overridden;
    /// a member with one of those names is ignored.
    pub fn with_member(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        if !RESERVED_MEMBERS.contains(&name.as_str()) {
            self.members.insert(name, value.into());
        }
        self
    }

    /// Adds a header to the response (for example `WWW-Authenticate`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable machine-readable code, e.g. `body_too_large`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable explanation of this occurrence.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// An extension member, if set.
    pub fn member(&self, name: &str) -> Option<&Value> {
        self.members.get(name)
    }

    /// Headers the response will carry besides `Content-Type`.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The serialized `application/problem+json` body.
    pub fn to_json(&self) -> Bytes {
        let mut object = Map::with_capacity(5 + self.members.len());
        object.insert("type".into(), Value::from("about:blank"));
        object.insert(
            "title".into(),
            Value::from(self.status.canonical_reason().unwrap_or("Error")),
        );
        object.insert("status".into(), Value::from(self.status.as_u16()));
        object.insert("detail".into(), Value::from(&*self.detail));
        object.insert("code".into(), Value::from(self.code));
        for (name, value) in &self.members {
            object.insert(name.clone(), value.clone());
        }
        // Serializing a `Value` built from strings and numbers cannot fail.
        Bytes::from(serde_json::to_vec(&Value::Object(object)).unwrap_or_default())
    }

    /// The full response: status, headers, `Content-Type: application/problem+json`, the body,
    /// and a [`ProblemCode`] response extension so outer middleware can log the outcome without
    /// parsing the body.
    pub fn to_response(&self) -> Response<Bytes> {
        let mut response = Response::new(self.to_json());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response.extensions_mut().insert(ProblemCode(self.code));
        response
    }
}

const RESERVED_MEMBERS: [&str; 5] = ["type", "title", "status", "detail", "code"];

/// The longest piece of sender-controlled text (serde messages, paths, event names, a body
/// error's message) a problem echoes, in bytes.
pub const MAX_ECHO: usize = 1024;

/// Cuts `text` to at most [`MAX_ECHO`] bytes on a character boundary, marking the cut with `…`.
///
/// ```
/// use polytomic_webhook_core::problem::{MAX_ECHO, bounded};
///
/// assert_eq!(bounded("short".into()), "short");
/// let long = bounded("é".repeat(MAX_ECHO));
/// assert!(long.len() <= MAX_ECHO + '…'.len_utf8());
/// assert!(long.ends_with('…'));
/// ```
pub fn bounded(mut text: String) -> String {
    if text.len() > MAX_ECHO {
        let mut end = MAX_ECHO;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.detail
        )
    }
}

impl axum_core::response::IntoResponse for Problem {
    fn into_response(self) -> axum_core::response::Response {
        self.to_response().map(axum_core::body::Body::from)
    }
}

/// Response extension naming the `code` of the problem a response carries.
///
/// Every rejection built from a [`Problem`] has one, so tracing and metrics middleware can
/// record the outcome of a request cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProblemCode(&'static str);

impl ProblemCode {
    /// The code, e.g. `invalid_token`.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(problem: &Problem) -> Value {
        serde_json::from_slice(&problem.to_json()).unwrap()
    }

    #[test]
    fn has_every_standard_member() {
        let problem = Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", "no match");
        let json = body(&problem);
        assert_eq!(json["type"], "about:blank");
        assert_eq!(json["title"], "Unauthorized");
        assert_eq!(json["status"], 401);
        assert_eq!(json["detail"], "no match");
        assert_eq!(json["code"], "invalid_token");
    }

    #[test]
    fn extension_members_cannot_override_standard_ones() {
        let problem = Problem::new(StatusCode::BAD_REQUEST, "invalid_json", "x")
            .with_member("code", "evil")
            .with_member("status", 200)
            .with_member("path", "object.records[3].hash");
        let json = body(&problem);
        assert_eq!(json["code"], "invalid_json");
        assert_eq!(json["status"], 400);
        assert_eq!(json["path"], "object.records[3].hash");
    }

    #[test]
    fn response_carries_headers_content_type_and_code() {
        let response = Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported", "x")
            .with_header(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_static("gzip"),
            )
            .to_response();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[http::header::ACCEPT_ENCODING], "gzip");
        assert_eq!(
            response.extensions().get::<ProblemCode>(),
            Some(&ProblemCode("unsupported"))
        );
    }

    #[test]
    fn detail_is_escaped_json() {
        let problem = Problem::new(StatusCode::BAD_REQUEST, "x", "quote \" and \n newline");
        assert_eq!(body(&problem)["detail"], "quote \" and \n newline");
    }
}
