//! [`DecompressionRejection`]: why the layer answers a request itself.

use http::header::ACCEPT_ENCODING;
use polytomic_webhook_core::body::{BODY_TOO_LARGE, BodyLimit, TooLargeLimit};
use polytomic_webhook_core::{__define_rejection, Problem};

use crate::coding::{UnsupportedContentEncoding, accept_encoding};

__define_rejection! {
    problem = Self::with_hints;
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
        #[rejection(UNSUPPORTED_MEDIA_TYPE, "unsupported_content_encoding")]
        UnsupportedContentEncoding(error: UnsupportedContentEncoding) => "{error}";
        /// The `Content-Length` is over [`max_compressed_bytes`](crate::DecompressionConfig)
        /// (413 `body_too_large`).
        #[rejection(PAYLOAD_TOO_LARGE, BODY_TOO_LARGE)]
        ContentLengthTooLarge {
            /// The configured limit.
            limit: u64,
        } => "{}", Self::too_large(*limit).detail();
    }
}

impl DecompressionRejection {
    fn too_large(limit: u64) -> TooLargeLimit {
        TooLargeLimit::Layer(BodyLimit::Compressed, limit)
    }

    /// The codings this build decodes, or which limit fired.
    fn with_hints(&self, problem: Problem) -> Problem {
        match self {
            Self::UnsupportedContentEncoding(_) => {
                problem.with_header(ACCEPT_ENCODING, accept_encoding())
            }
            Self::ContentLengthTooLarge { limit } => {
                problem.with_member("limit", Self::too_large(*limit).kind())
            }
        }
    }
}
