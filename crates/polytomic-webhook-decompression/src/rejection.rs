//! [`DecompressionRejection`]: why the layer answers a request itself.

use std::fmt;

use http::StatusCode;
use http::header::ACCEPT_ENCODING;
use polytomic_webhook_core::Problem;
use polytomic_webhook_core::body::{BodyLimit, TooLargeLimit};

use crate::coding::{UnsupportedContentEncoding, accept_encoding};

/// A request the decompression layer refuses before its body is read.
///
/// ```
/// use http::Request;
/// use polytomic_webhook_decompression::{DecompressionLayer, DecompressionRejection};
///
/// let request = Request::post("/")
///     .header("content-encoding", "compress")
///     .body(())
///     .unwrap();
/// let rejection = DecompressionLayer::new().decompress(request).unwrap_err();
/// assert!(matches!(rejection, DecompressionRejection::UnsupportedContentEncoding(_)));
/// assert_eq!(rejection.status(), 415);
/// assert_eq!(rejection.code(), "unsupported_content_encoding");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecompressionRejection {
    /// The `Content-Encoding` names a coding this build does not decode, or too many
    /// (415 `unsupported_content_encoding`, with `Accept-Encoding`).
    UnsupportedContentEncoding(UnsupportedContentEncoding),
    /// The `Content-Length` is over [`max_compressed_bytes`](crate::DecompressionConfig)
    /// (413 `body_too_large`).
    ContentLengthTooLarge {
        /// The configured limit.
        limit: u64,
    },
}

impl DecompressionRejection {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedContentEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ContentLengthTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The stable problem `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedContentEncoding(_) => "unsupported_content_encoding",
            Self::ContentLengthTooLarge { .. } => polytomic_webhook_core::body::BODY_TOO_LARGE,
        }
    }

    /// The problem the layer answers with.
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::UnsupportedContentEncoding(error) => {
                Problem::new(self.status(), self.code(), error.to_string())
                    .with_header(ACCEPT_ENCODING, accept_encoding())
            }
            Self::ContentLengthTooLarge { limit } => {
                TooLargeLimit::Layer(BodyLimit::Compressed, *limit).problem()
            }
        }
    }
}

impl fmt::Display for DecompressionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedContentEncoding(error) => error.fmt(f),
            Self::ContentLengthTooLarge { limit } => {
                f.write_str(&TooLargeLimit::Layer(BodyLimit::Compressed, *limit).detail())
            }
        }
    }
}

impl std::error::Error for DecompressionRejection {}

impl axum_core::response::IntoResponse for DecompressionRejection {
    fn into_response(self) -> axum_core::response::Response {
        self.to_problem().into_response()
    }
}
