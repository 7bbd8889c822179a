//! The `Authorization` and `Polytomic-Signature-Timestamp` parsers on arbitrary bytes.
//!
//! Invariants: never a panic; an accepted bearer token is non-empty, trimmed, and reads back
//! the same from `Bearer <token>`; an accepted timestamp reads back the same from its RFC 3339
//! form; header-map parsing agrees with the byte parser.
#![no_main]

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use libfuzzer_sys::fuzz_target;
use polytomic_webhook_auth::authorization::{bearer_token, parse_bearer};
use polytomic_webhook_auth::timestamp::parse_timestamp;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = parse_bearer(data) {
        assert!(!token.is_empty());
        assert_eq!(token, token.trim());
        let again = format!("Bearer {token}");
        assert_eq!(parse_bearer(again.as_bytes()).ok(), Some(token));
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        assert_eq!(bearer_token(&headers).ok(), parse_bearer(data).ok());
    }
    if let Ok(time) = parse_timestamp(data) {
        let text = time.to_rfc3339();
        assert_eq!(parse_timestamp(text.as_bytes()).ok(), Some(time));
    }
});
