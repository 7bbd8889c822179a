//! Limits and switches of the decompression layer, as plain data.

use serde::Deserialize;

/// 32 MiB: far above any Polytomic batch (100 records by default), far below what would hurt.
const DEFAULT_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// How the decompression layer bounds and detects request bodies.
///
/// Every limit is on by default. The struct can be read from a configuration file (every field
/// is optional there) or built with the layer's builder methods.
///
/// ```
/// use polytomic_webhook_decompression::DecompressionConfig;
///
/// let config: DecompressionConfig =
///     serde_json::from_str(r#"{ "max_decompressed_bytes": 1048576, "max_ratio": null }"#).unwrap();
/// assert_eq!(config.max_decompressed_bytes, 1 << 20);
/// assert_eq!(config.max_compressed_bytes, 32 << 20);
/// assert_eq!(config.max_ratio, None);
/// assert_eq!(config.sniff_gzip, cfg!(feature = "gzip"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DecompressionConfig {
    /// Most bytes the decoded body may have (default 32 MiB). Counted while streaming: the body
    /// fails the moment its output would pass this, and reads no more input.
    pub max_decompressed_bytes: u64,
    /// Most bytes the body may have as received (default 32 MiB). A larger `Content-Length` is
    /// refused before the inner service is called; a body without one is counted as it streams.
    pub max_compressed_bytes: u64,
    /// Most decoded bytes per received byte (default 100), checked once at least 1 MiB has been
    /// decoded; `None` disables the check.
    pub max_ratio: Option<u32>,
    /// Decode a body as gzip when it declares no coding but starts with the gzip magic bytes
    /// (default `true` when the `gzip` feature is on). See the crate docs for why.
    pub sniff_gzip: bool,
}

impl Default for DecompressionConfig {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: DEFAULT_MAX_BYTES,
            max_compressed_bytes: DEFAULT_MAX_BYTES,
            max_ratio: Some(100),
            // Without a gzip decoder there is nothing to sniff for.
            sniff_gzip: cfg!(feature = "gzip"),
        }
    }
}

/// The ratio check waits for this much output, so small, highly compressible bodies (a short
/// JSON document of repeated keys easily compresses 20:1) are never refused for their ratio.
pub(crate) const RATIO_CHECK_AFTER_BYTES: u64 = 1024 * 1024;
