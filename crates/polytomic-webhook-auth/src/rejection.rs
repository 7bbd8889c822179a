//! Every way this crate refuses a request, as one type.

use std::fmt;

use http::StatusCode;
use polytomic_webhook_core::Problem;

use crate::allowlist::SourceIpRejection;
use crate::authorization::AuthorizationError;
use crate::signature::SignatureError;
use crate::timestamp::TimestampError;

/// Any rejection of this crate's layers.
///
/// Each variant wraps the specific error; all of them render as `application/problem+json`
/// with a stable `code`, and none of them carries any part of a presented token or configured
/// secret.
///
/// ```
/// use polytomic_webhook_auth::AuthRejection;
/// use polytomic_webhook_auth::authorization::AuthorizationError;
///
/// let rejection = AuthRejection::from(AuthorizationError::Missing);
/// assert_eq!(rejection.status(), 401);
/// assert_eq!(rejection.code(), "missing_authorization");
/// let response = rejection.to_problem().to_response();
/// assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="polytomic-webhook""#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthRejection {
    /// The bearer credentials were missing or wrong.
    Authorization(AuthorizationError),
    /// The delivery timestamp was missing, malformed or outside the window.
    Timestamp(TimestampError),
    /// The source address is not allowed.
    SourceIp(SourceIpRejection),
    /// The Events webhook's `Polytomic-Signature` was missing or wrong.
    Signature(SignatureError),
}

impl AuthRejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Authorization(error) => error.status(),
            Self::Timestamp(error) => error.status(),
            Self::SourceIp(error) => error.status(),
            Self::Signature(error) => error.status(),
        }
    }

    /// The stable problem `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Authorization(error) => error.code(),
            Self::Timestamp(error) => error.code(),
            Self::SourceIp(error) => error.code(),
            Self::Signature(error) => error.code(),
        }
    }

    /// The human-readable detail.
    pub fn body_text(&self) -> String {
        self.to_string()
    }

    /// The problem response.
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::Authorization(error) => error.to_problem(),
            Self::Timestamp(error) => error.to_problem(),
            Self::SourceIp(error) => error.to_problem(),
            Self::Signature(error) => error.to_problem(),
        }
    }
}

impl fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authorization(error) => error.fmt(f),
            Self::Timestamp(error) => error.fmt(f),
            Self::SourceIp(error) => error.fmt(f),
            Self::Signature(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for AuthRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Authorization(error) => Some(error),
            Self::Timestamp(error) => Some(error),
            Self::SourceIp(error) => Some(error),
            Self::Signature(error) => Some(error),
        }
    }
}

impl From<AuthorizationError> for AuthRejection {
    fn from(error: AuthorizationError) -> Self {
        Self::Authorization(error)
    }
}

impl From<TimestampError> for AuthRejection {
    fn from(error: TimestampError) -> Self {
        Self::Timestamp(error)
    }
}

impl From<SignatureError> for AuthRejection {
    fn from(error: SignatureError) -> Self {
        Self::Signature(error)
    }
}

impl From<SourceIpRejection> for AuthRejection {
    fn from(error: SourceIpRejection) -> Self {
        Self::SourceIp(error)
    }
}

impl axum_core::response::IntoResponse for AuthRejection {
    fn into_response(self) -> axum_core::response::Response {
        self.to_problem().into_response()
    }
}
