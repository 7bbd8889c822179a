//! [`Decompression`]: the middleware service.

use std::task::{Context, Poll};

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use polytomic_webhook_core::body::{BodyStatsWriter, BoxError};
use polytomic_webhook_core::response::ResponseBody;
use tower_service::Service;

use crate::body::DecompressionBody;
use crate::coding::Codings;
use crate::config::DecompressionConfig;
use crate::future::ResponseFuture;
use crate::info::DecompressionInfo;
use crate::rejection::DecompressionRejection;

/// Middleware that decodes request bodies within limits. Built by
/// [`DecompressionLayer`](crate::DecompressionLayer).
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
#[derive(Clone, Debug)]
pub struct Decompression<S> {
    inner: S,
    config: DecompressionConfig,
}

impl<S> Decompression<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, config: DecompressionConfig) -> Self {
        Self { inner, config }
    }

    /// The configuration in force.
    pub fn config(&self) -> &DecompressionConfig {
        &self.config
    }

    polytomic_webhook_core::inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Decompression<S>
where
    S: Service<Request<DecompressionBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match decompress(request, &self.config) {
            Ok(request) => ResponseFuture::inner(self.inner.call(request)),
            Err(rejection) => ResponseFuture::rejected(&rejection.to_problem()),
        }
    }
}

/// Checks the request's headers and wraps its body; see [`DecompressionLayer::decompress`].
pub(crate) fn decompress<B>(
    mut request: Request<B>,
    config: &DecompressionConfig,
) -> Result<Request<DecompressionBody<B>>, DecompressionRejection> {
    let codings = Codings::from_headers_at_most(request.headers(), config.codings_allowed())
        .map_err(DecompressionRejection::UnsupportedContentEncoding)?;
    if declared_length(request.headers()).is_some_and(|length| length > config.max_compressed_bytes)
    {
        return Err(DecompressionRejection::ContentLengthTooLarge {
            limit: config.max_compressed_bytes,
        });
    }
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
    Ok(request.map(|body| DecompressionBody::with_stats(body, &codings, *config, stats)))
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
