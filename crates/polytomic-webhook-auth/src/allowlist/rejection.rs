use std::fmt;
use std::net::IpAddr;

use http::StatusCode;
use polytomic_webhook_core::Problem;

/// Why the source-IP allowlist refused a request: always `403`, code `source_ip_not_allowed`.
///
/// ```
/// use polytomic_webhook_auth::allowlist::SourceIpRejection;
///
/// let rejection = SourceIpRejection::NotAllowed { ip: "203.0.113.9".parse().unwrap() };
/// assert_eq!(rejection.status(), 403);
/// assert_eq!(rejection.code(), "source_ip_not_allowed");
/// assert_eq!(rejection.body_text(), "the source address 203.0.113.9 is not allowed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceIpRejection {
    /// The server did not record the connection's peer address, so nothing can be allowed.
    NoPeerAddress,
    /// The client address is outside every allowed block.
    NotAllowed {
        /// The refused address.
        ip: IpAddr,
    },
    /// The peer is a trusted proxy, but the forwarding headers do not say who the client is
    /// (an `unknown` or obfuscated entry where the walk needs it, a header malformed
    /// anywhere, or more trusted hops than are read).
    UntraceableClient,
}

impl SourceIpRejection {
    /// The HTTP status: always `403 Forbidden`.
    pub fn status(&self) -> StatusCode {
        StatusCode::FORBIDDEN
    }

    /// The stable problem `code`: always `source_ip_not_allowed`.
    pub fn code(&self) -> &'static str {
        "source_ip_not_allowed"
    }

    /// The human-readable detail.
    pub fn body_text(&self) -> String {
        self.to_string()
    }

    /// The problem response.
    pub fn to_problem(&self) -> Problem {
        Problem::new(self.status(), self.code(), self.body_text())
    }
}

impl fmt::Display for SourceIpRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPeerAddress => f.write_str("the source address of the request is unknown"),
            Self::NotAllowed { ip } => write!(f, "the source address {ip} is not allowed"),
            Self::UntraceableClient => f.write_str(
                "the forwarding headers set by a trusted proxy do not identify the client",
            ),
        }
    }
}

impl std::error::Error for SourceIpRejection {}

impl axum_core::response::IntoResponse for SourceIpRejection {
    fn into_response(self) -> axum_core::response::Response {
        self.to_problem().into_response()
    }
}
