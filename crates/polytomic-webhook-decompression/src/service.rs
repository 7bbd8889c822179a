//! [`Decompression`]: the middleware service.

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderMap, Request};
use polytomic_webhook_core::body::BodyStatsWriter;
use polytomic_webhook_core::check::{Check, CheckService, Refused};

use crate::body::DecompressionBody;
use crate::coding::Codings;
use crate::config::DecompressionConfig;
use crate::info::DecompressionInfo;
use crate::rejection::DecompressionRejection;

/// Middleware that decodes request bodies within limits: the [`DecompressionConfig`] check in
/// a [`CheckService`]. Built by [`DecompressionLayer`](crate::DecompressionLayer); a refusal
/// (415, 413) is logged with its code, as the other stages' are.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use polytomic_webhook_decompression::{Decompression, DecompressionBody, DecompressionConfig};
/// use tower::{ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let service = Decompression::new(
///     service_fn(|_request: Request<DecompressionBody<Full<Bytes>>>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
///     }),
///     DecompressionConfig::default(),
/// );
/// let request = Request::post("/")
///     .header("content-encoding", "compress")
///     .body(Full::new(Bytes::new()))
///     .unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
/// # });
/// ```
pub type Decompression<S> = CheckService<S, DecompressionConfig>;

impl<B> Check<B> for DecompressionConfig {
    type Body = DecompressionBody<B>;
    type Refusal = DecompressionRejection;

    /// Checks the request's headers and wraps its body; see [`DecompressionLayer::decompress`].
    /// A refused body is left unread: it is too large to drain, or the sender is
    /// authenticated and answered at once.
    ///
    /// [`DecompressionLayer::decompress`]: crate::DecompressionLayer::decompress
    fn check(
        &self,
        request: Request<B>,
    ) -> Result<Request<DecompressionBody<B>>, Refused<B, DecompressionRejection>> {
        match self.admit(request.headers()) {
            Ok(codings) => Ok(prepare(request, codings, self)),
            Err(rejection) => Err(Refused::keep_body(request, rejection)),
        }
    }
}

impl DecompressionConfig {
    /// The head's part of the check: the codings to decode, or why the request is refused
    /// (an unsupported or over-stacked coding, a `Content-Length` over
    /// [`max_compressed_bytes`](Self::max_compressed_bytes)). For a caller that holds the body
    /// itself and decodes it with [`DecompressionBody`] later.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use polytomic_webhook_decompression::DecompressionConfig;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("content-encoding", "gzip".parse().unwrap());
    /// let codings = DecompressionConfig::default().admit(&headers).unwrap();
    /// assert_eq!(codings.to_string(), "gzip");
    /// headers.insert("content-encoding", "compress".parse().unwrap());
    /// assert!(DecompressionConfig::default().admit(&headers).is_err());
    /// ```
    pub fn admit(&self, headers: &HeaderMap) -> Result<Codings, DecompressionRejection> {
        let codings = Codings::from_headers_at_most(headers, self.codings_allowed())
            .map_err(DecompressionRejection::UnsupportedContentEncoding)?;
        if declared_length(headers).is_some_and(|length| length > self.max_compressed_bytes) {
            return Err(DecompressionRejection::ContentLengthTooLarge {
                limit: self.max_compressed_bytes,
            });
        }
        Ok(codings)
    }
}

/// Wraps the body of an admitted request in its decoder, and records what is decoded.
fn prepare<B>(
    mut request: Request<B>,
    codings: Codings,
    config: &DecompressionConfig,
) -> Request<DecompressionBody<B>> {
    // The headers must describe the body the inner service reads. Once a coding is declared,
    // or may be sniffed, neither the coding nor the length of what arrives holds for it.
    if !codings.is_empty() || config.sniff_gzip {
        let headers = request.headers_mut();
        headers.remove(CONTENT_ENCODING);
        headers.remove(CONTENT_LENGTH);
    }
    let stats = BodyStatsWriter::new();
    let extensions = request.extensions_mut();
    extensions.insert(DecompressionInfo::new(codings, stats.stats().clone()));
    extensions.insert(stats.stats().clone());
    request.map(|body| DecompressionBody::with_stats(body, &codings, *config, stats))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
