//! [`DecompressionLayer`]: configuration and `tower::Layer` for [`Decompression`].

use http::Request;
use polytomic_webhook_core::check::{Check, CheckService, Refused};
use tower_layer::Layer;

use crate::body::DecompressionBody;
use crate::config::DecompressionConfig;
use crate::rejection::DecompressionRejection;
use crate::service::Decompression;

/// Decodes request bodies within limits; see the [crate docs](crate) for the behaviour.
///
/// In an axum `Router`:
///
/// ```
/// use axum::{Router, routing::post};
/// use polytomic_webhook_decompression::DecompressionLayer;
///
/// async fn receive(body: String) -> String {
///     format!("got {} bytes", body.len())
/// }
///
/// let app: Router = Router::new()
///     .route("/webhooks/polytomic", post(receive))
///     .layer(DecompressionLayer::new().max_decompressed_bytes(8 * 1024 * 1024));
/// ```
///
/// In a plain `tower::ServiceBuilder`, around any service taking `Request<DecompressionBody<B>>`:
///
/// ```
/// use std::convert::Infallible;
///
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::{BodyExt, Full};
/// use polytomic_webhook_decompression::{DecompressionBody, DecompressionLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let service = ServiceBuilder::new()
///     .layer(DecompressionLayer::new())
///     .service(service_fn(|request: Request<DecompressionBody<Full<Bytes>>>| async move {
///         let body = request.into_body().collect().await.map_err(|e| e.to_string());
///         Ok::<_, Infallible>(Response::new(Full::new(body.unwrap().to_bytes())))
///     }));
///
/// // A gzip body without `Content-Encoding`, as in Polytomic's sample, is recognised.
/// let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
/// std::io::Write::write_all(&mut encoder, br#"{"event":"sync.records"}"#).unwrap();
/// let gzip = encoder.finish().unwrap();
///
/// let response = service
///     .oneshot(Request::post("/").body(Full::new(Bytes::from(gzip))).unwrap())
///     .await
///     .unwrap();
/// let body = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(&body[..], br#"{"event":"sync.records"}"#);
/// # });
/// ```
///
/// Every limit has a builder method:
///
/// ```
/// use polytomic_webhook_decompression::DecompressionLayer;
///
/// let layer = DecompressionLayer::new()
///     .max_decompressed_bytes(8 * 1024 * 1024)
///     .max_compressed_bytes(1024 * 1024)
///     .max_ratio(Some(50))
///     .sniff_gzip(true)
///     .max_codings(2);
/// assert_eq!(layer.config().max_ratio, Some(50));
/// ```
#[derive(Clone, Copy, Debug, Default)]
#[must_use]
pub struct DecompressionLayer {
    config: DecompressionConfig,
}

impl DecompressionLayer {
    /// A layer with the default limits (32 MiB decoded, 32 MiB received, ratio 100:1, one
    /// coding per request, sniffing on).
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer with the given configuration.
    pub fn from_config(config: DecompressionConfig) -> Self {
        Self { config }
    }

    /// The layer's configuration.
    pub fn config(&self) -> &DecompressionConfig {
        &self.config
    }

    /// Prepares one request as the middleware would, without a service: checks its
    /// `Content-Encoding` and `Content-Length`, then wraps its body in a [`DecompressionBody`]
    /// and inserts the [`DecompressionInfo`](crate::DecompressionInfo) and `BodyStats` extensions.
    /// For composing the layer into another middleware.
    ///
    /// ```
    /// use http::Request;
    /// use polytomic_webhook_decompression::{DecompressionInfo, DecompressionLayer};
    ///
    /// let request = Request::post("/").header("content-encoding", "GZIP").body(()).unwrap();
    /// let request = DecompressionLayer::new().decompress(request).unwrap();
    /// assert!(request.headers().get("content-encoding").is_none());
    /// assert_eq!(request.extensions().get::<DecompressionInfo>().unwrap().coding(), "gzip");
    /// ```
    pub fn decompress<B>(
        &self,
        request: Request<B>,
    ) -> Result<Request<DecompressionBody<B>>, DecompressionRejection> {
        self.config.check(request).map_err(Refused::into_refusal)
    }

    /// Most bytes a decoded body may have.
    pub fn max_decompressed_bytes(mut self, bytes: u64) -> Self {
        self.config.max_decompressed_bytes = bytes;
        self
    }

    /// Most bytes a body may have as received.
    pub fn max_compressed_bytes(mut self, bytes: u64) -> Self {
        self.config.max_compressed_bytes = bytes;
        self
    }

    /// Most decoded bytes per received byte, checked after the first MiB; `None` disables it.
    pub fn max_ratio(mut self, ratio: Option<u32>) -> Self {
        self.config.max_ratio = ratio;
        self
    }

    /// Most content codings one request may declare, brought into 1 to
    /// [`MAX_STACKED_CODINGS`](crate::MAX_STACKED_CODINGS). The default, 1, refuses stacked
    /// codings such as `gzip, gzip` with 415.
    ///
    /// ```
    /// use polytomic_webhook_decompression::DecompressionLayer;
    ///
    /// assert_eq!(DecompressionLayer::new().config().max_codings, 1);
    /// assert_eq!(DecompressionLayer::new().max_codings(2).config().max_codings, 2);
    /// assert_eq!(DecompressionLayer::new().max_codings(9).config().max_codings, 3);
    /// ```
    pub fn max_codings(mut self, codings: usize) -> Self {
        self.config.max_codings = codings;
        self.config.max_codings = self.config.codings_allowed();
        self
    }

    /// Whether a body with no declared coding that starts like gzip is decoded as gzip.
    pub fn sniff_gzip(mut self, enabled: bool) -> Self {
        self.config.sniff_gzip = enabled;
        self
    }
}

impl<S> Layer<S> for DecompressionLayer {
    type Service = Decompression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CheckService::new(inner, self.config)
    }
}
