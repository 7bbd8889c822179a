//! [`DecompressionInfo`]: what the layer learned about a request body, for handlers and logs.

use polytomic_webhook_core::body::BodyStats;

use crate::coding::Codings;

/// Request extension describing the body's coding and its byte counts.
///
/// Inserted by [`Decompression`](crate::Decompression) on every request it passes on. The counts
/// grow as the body is read, so read them after the body (for example when logging the outcome).
///
/// ```
/// use polytomic_webhook_decompression::DecompressionInfo;
///
/// fn describe(request: &http::Request<()>) -> Option<String> {
///     let info = request.extensions().get::<DecompressionInfo>()?;
///     Some(format!(
///         "{}: {} bytes received, {} decoded",
///         info.coding(),
///         info.stats().compressed_bytes(),
///         info.stats().decoded_bytes()
///     ))
/// }
/// # assert_eq!(describe(&http::Request::new(())), None);
/// ```
#[derive(Clone, Debug)]
pub struct DecompressionInfo {
    declared: Codings,
    stats: BodyStats,
}

impl DecompressionInfo {
    /// The description of a body declared with `declared`, counted in `stats` (the stats of
    /// the [`BodyStatsWriter`](polytomic_webhook_core::body::BodyStatsWriter) given to
    /// [`DecompressionBody::with_stats`](crate::DecompressionBody::with_stats)).
    pub fn new(declared: Codings, stats: BodyStats) -> Self {
        Self { declared, stats }
    }

    /// The codings the request declared in `Content-Encoding`, in the order applied.
    pub fn declared(&self) -> &Codings {
        &self.declared
    }

    /// The coding actually decoded: the declared list, `gzip` when sniffed, else `identity`.
    pub fn coding(&self) -> String {
        if self.stats.was_sniffed() {
            "gzip".to_owned()
        } else {
            self.declared.to_string()
        }
    }

    /// Received and decoded byte counts, and the limit that fired if one did.
    pub fn stats(&self) -> &BodyStats {
        &self.stats
    }
}
