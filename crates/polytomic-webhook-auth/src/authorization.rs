//! Parsing the `Authorization` header (RFC 9110 §11.6.2, RFC 6750 §2.1).
//!
//! These functions are pure: they read header bytes and return the bearer token or a typed
//! [`AuthorizationError`], so they can be tested and fuzzed without a service around them.
//!
//! The rules:
//!
//! - exactly one `Authorization` header must be present;
//! - its value may contain only visible ASCII, spaces and tabs;
//! - the scheme is matched case-insensitively (`Bearer`, `bearer`, `BEARER`) and is followed
//!   by one or more spaces;
//! - the token is the rest of the value with surrounding spaces and tabs trimmed. It is treated
//!   as opaque: Polytomic sends whatever was configured as the connection's secret, so the
//!   token is not restricted to RFC 6750's `b64token` characters.

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue};
use polytomic_webhook_core::{__define_rejection, Problem};

use crate::secret::is_header_char;

/// The challenge sent with every 401: `Bearer realm="polytomic-webhook"`.
pub const CHALLENGE: &str = r#"Bearer realm="polytomic-webhook""#;

/// The challenge sent when a token was presented but is not valid (RFC 6750 §3.1).
pub const INVALID_TOKEN_CHALLENGE: &str =
    r#"Bearer realm="polytomic-webhook", error="invalid_token""#;

/// Returns the bearer token of the request's single `Authorization` header.
///
/// ```
/// use http::HeaderMap;
/// use polytomic_webhook_auth::authorization::{AuthorizationError, bearer_token};
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(bearer_token(&headers), Err(AuthorizationError::Missing));
///
/// headers.insert("authorization", "bearer  abc.def ".parse().unwrap());
/// assert_eq!(bearer_token(&headers), Ok("abc.def"));
///
/// headers.append("authorization", "Bearer other".parse().unwrap());
/// assert_eq!(bearer_token(&headers), Err(AuthorizationError::Multiple));
/// ```
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthorizationError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthorizationError::Missing)?;
    if values.next().is_some() {
        return Err(AuthorizationError::Multiple);
    }
    parse_bearer(value.as_bytes())
}

/// Returns the bearer token of one `Authorization` header value.
///
/// ```
/// use polytomic_webhook_auth::authorization::{AuthorizationError, parse_bearer};
///
/// assert_eq!(parse_bearer(b"Bearer token"), Ok("token"));
/// assert_eq!(parse_bearer(b"BEARER token"), Ok("token"));
/// assert_eq!(parse_bearer(b"Basic dXNlcjpwYXNz"), Err(AuthorizationError::UnsupportedScheme));
/// assert_eq!(parse_bearer(b"Bearer   "), Err(AuthorizationError::EmptyToken));
/// assert_eq!(parse_bearer(b"Bearer \xff"), Err(AuthorizationError::InvalidCharacters));
/// ```
pub fn parse_bearer(value: &[u8]) -> Result<&str, AuthorizationError> {
    if !value.iter().copied().all(is_header_char) {
        return Err(AuthorizationError::InvalidCharacters);
    }
    // Only ASCII remains, so this cannot fail; mapping the error keeps the function panic-free.
    let value = std::str::from_utf8(value).map_err(|_| AuthorizationError::InvalidCharacters)?;
    let value = value.trim_matches(is_whitespace);
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthorizationError::UnsupportedScheme);
    }
    let token = token.trim_matches(is_whitespace);
    if token.is_empty() {
        return Err(AuthorizationError::EmptyToken);
    }
    Ok(token)
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t')
}

__define_rejection! {
    problem = Self::with_challenge;
    /// Why a request's bearer credentials were refused.
    ///
    /// All variants answer 401 with a `WWW-Authenticate` challenge. Only the presence of a
    /// problem is described, never the presented value.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum AuthorizationError {
        /// No `Authorization` header (`missing_authorization`).
        #[rejection(UNAUTHORIZED, "missing_authorization")]
        Missing => "the request has no Authorization header";
        /// More than one `Authorization` header (`invalid_token`).
        #[rejection(UNAUTHORIZED, "invalid_token")]
        Multiple => "the request has more than one Authorization header";
        /// A scheme other than `Bearer` (`unsupported_authorization_scheme`).
        #[rejection(UNAUTHORIZED, "unsupported_authorization_scheme")]
        UnsupportedScheme => "the Authorization header does not use the Bearer scheme";
        /// The `Bearer` scheme with no token (`invalid_token`).
        #[rejection(UNAUTHORIZED, "invalid_token")]
        EmptyToken => "the Authorization header has no bearer token";
        /// A header value with characters other than visible ASCII, space or tab (`invalid_token`).
        #[rejection(UNAUTHORIZED, "invalid_token")]
        InvalidCharacters =>
            "the Authorization header contains characters other than visible ASCII";
        /// A well-formed token that matches none of the configured secrets (`invalid_token`).
        #[rejection(UNAUTHORIZED, "invalid_token")]
        NoMatch => "the bearer token does not match any configured secret";
    }
}

impl AuthorizationError {
    /// The `WWW-Authenticate` challenge. RFC 6750 §3.1 asks for `error="invalid_token"` when
    /// a token was presented but is unusable, and for no error code when the client sent no
    /// credentials or used another scheme.
    pub fn challenge(&self) -> HeaderValue {
        match self {
            Self::Missing | Self::UnsupportedScheme => HeaderValue::from_static(CHALLENGE),
            Self::Multiple | Self::EmptyToken | Self::InvalidCharacters | Self::NoMatch => {
                HeaderValue::from_static(INVALID_TOKEN_CHALLENGE)
            }
        }
    }

    fn with_challenge(&self, problem: Problem) -> Problem {
        problem.with_header(WWW_AUTHENTICATE, self.challenge())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_case_insensitive() {
        for value in ["Bearer t", "bearer t", "BEARER t", "bEaReR t"] {
            assert_eq!(parse_bearer(value.as_bytes()), Ok("t"), "{value}");
        }
    }

    #[test]
    fn one_or_more_spaces_and_surrounding_whitespace() {
        assert_eq!(parse_bearer(b"Bearer    tok"), Ok("tok"));
        assert_eq!(parse_bearer(b"  Bearer tok \t"), Ok("tok"));
        assert_eq!(parse_bearer(b"Bearer \ttok"), Ok("tok"));
    }

    #[test]
    fn token_is_opaque() {
        assert_eq!(parse_bearer(b"Bearer a b=c\"d"), Ok("a b=c\"d"));
        assert_eq!(parse_bearer(b"Bearer x.y_z-~+/="), Ok("x.y_z-~+/="));
    }

    #[test]
    fn other_schemes_and_glued_schemes_are_unsupported() {
        for value in [
            "Basic abc",
            "Token abc",
            "Bearerabc",
            "Bearer\tabc",
            "",
            "   ",
        ] {
            assert_eq!(
                parse_bearer(value.as_bytes()),
                Err(AuthorizationError::UnsupportedScheme),
                "{value:?}"
            );
        }
    }

    #[test]
    fn empty_token() {
        for value in ["Bearer", "bearer ", "Bearer  \t "] {
            assert_eq!(
                parse_bearer(value.as_bytes()),
                Err(AuthorizationError::EmptyToken),
                "{value:?}"
            );
        }
    }

    #[test]
    fn non_visible_ascii() {
        for value in [
            &b"Bearer a\x00b"[..],
            b"Bearer \x7f",
            b"Bearer caf\xc3\xa9",
            b"\x01",
        ] {
            assert_eq!(
                parse_bearer(value),
                Err(AuthorizationError::InvalidCharacters)
            );
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(AuthorizationError::Missing.challenge(), CHALLENGE);
        assert_eq!(AuthorizationError::UnsupportedScheme.challenge(), CHALLENGE);
        for error in [
            AuthorizationError::Multiple,
            AuthorizationError::EmptyToken,
            AuthorizationError::InvalidCharacters,
            AuthorizationError::NoMatch,
        ] {
            assert_eq!(error.challenge(), INVALID_TOKEN_CHALLENGE);
            assert_eq!(error.code(), "invalid_token");
        }
    }
}
