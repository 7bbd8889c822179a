//! Limits and switches of the decompression layer, as plain data.

use serde::{Deserialize, Deserializer, de};

use crate::coding::MAX_STACKED_CODINGS;

/// 32 MiB: far above any Polytomic batch (100 records by default), far below what would hurt.
const DEFAULT_MAX_BYTES: u64 = polytomic_webhook_core::body::DEFAULT_MAX_COMPRESSED_BYTES;

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
/// assert_eq!(config.max_codings, 1);
///
/// // Stacking is limited to three codings: a file asking for more is refused, not trimmed.
/// assert!(serde_json::from_str::<DecompressionConfig>(r#"{ "max_codings": 3 }"#).is_ok());
/// assert!(serde_json::from_str::<DecompressionConfig>(r#"{ "max_codings": 4 }"#).is_err());
/// assert!(serde_json::from_str::<DecompressionConfig>(r#"{ "max_codings": 0 }"#).is_err());
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
    /// Most content codings one request may declare (default 1: no stacking). Polytomic applies
    /// a single gzip layer; each stacked coding adds a decoder whose work one small body can
    /// multiply, so `Content-Encoding: gzip, gzip` is refused with 415 unless this is raised.
    /// At most [`MAX_STACKED_CODINGS`] (3). In a configuration file a value outside 1 to 3 is an
    /// error; set in code, it is brought into that range (0 counts as 1, more than 3 as 3).
    #[serde(deserialize_with = "stacked_codings")]
    pub max_codings: usize,
}

impl Default for DecompressionConfig {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: DEFAULT_MAX_BYTES,
            max_compressed_bytes: DEFAULT_MAX_BYTES,
            max_ratio: Some(100),
            // Without a gzip decoder there is nothing to sniff for.
            sniff_gzip: cfg!(feature = "gzip"),
            max_codings: 1,
        }
    }
}

impl DecompressionConfig {
    /// [`max_codings`](Self::max_codings) within its range, as it is applied.
    pub(crate) fn codings_allowed(&self) -> usize {
        self.max_codings.clamp(1, MAX_STACKED_CODINGS)
    }
}

/// A file that asks for more stacking than can be had says so at start-up, rather than being
/// quietly trimmed.
fn stacked_codings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(deserializer)?;
    if (1..=MAX_STACKED_CODINGS).contains(&value) {
        Ok(value)
    } else {
        Err(de::Error::custom(format_args!(
            "max_codings must be 1 to {MAX_STACKED_CODINGS}, not {value}"
        )))
    }
}

/// The ratio check waits for this much output, so small, highly compressible bodies (a short
/// JSON document of repeated keys easily compresses 20:1) are never refused for their ratio.
pub(crate) const RATIO_CHECK_AFTER_BYTES: u64 = 1024 * 1024;
