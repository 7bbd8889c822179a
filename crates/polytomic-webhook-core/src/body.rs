//! The vocabulary a decoding body and the extractor share about what went wrong while reading.
//!
//! A body that stops because a size limit fired yields
//! [`http_body_util::LengthLimitError`] (see [`length_limit_error`]): axum's own `Bytes`, `String`
//! and `Json` extractors recognise exactly that type and answer 413, so the stack stays correct
//! even for handlers that never use our extractor. That error type carries no detail, so which
//! limit fired, and how many bytes went through, is recorded in a [`BodyStats`] request extension
//! that the producing layer inserts and readers such as the `PolytomicEvent` extractor consult.
//! Corrupt or truncated compressed data surfaces as [`InvalidCompressedBody`].

use std::error::Error;
use std::fmt;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::StatusCode;
use http_body::Body;
use http_body_util::{Full, Limited};

use crate::problem::{Problem, bounded};
use crate::rejection::ErrorSource;

/// The compressed-size limit of a request body unless configured otherwise: 32 MiB. It is also
/// what a refused body is drained up to by default.
pub const DEFAULT_MAX_COMPRESSED_BYTES: u64 = 32 * 1024 * 1024;

/// Boxed error type used by bodies in the stack.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Which size limit stopped a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyLimit {
    /// The body as it arrived on the wire was larger than allowed.
    Compressed,
    /// The decoded body grew larger than allowed.
    Decompressed,
    /// The decoded body grew too large relative to the bytes that produced it.
    Ratio,
}

impl BodyLimit {
    /// A short description for problem details and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Compressed => "compressed body size limit",
            Self::Decompressed => "decompressed body size limit",
            Self::Ratio => "decompression ratio limit",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Compressed => 1,
            Self::Decompressed => 2,
            Self::Ratio => 3,
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Compressed),
            2 => Some(Self::Decompressed),
            3 => Some(Self::Ratio),
            _ => None,
        }
    }
}

impl BodyLimit {
    /// The value of the `limit` member of a `body_too_large` problem.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compressed => "compressed",
            Self::Decompressed => "decompressed",
            Self::Ratio => "ratio",
        }
    }
}

/// Which limit stopped a body, as far as its reader can tell.
///
/// ```
/// use polytomic_webhook_core::body::{BodyLimit, TooLargeLimit};
///
/// let limit = TooLargeLimit::Layer(BodyLimit::Decompressed, 1 << 20);
/// assert_eq!(
///     limit.detail(),
///     "the request body exceeds the decompressed body size limit of 1048576 bytes"
/// );
/// assert_eq!(limit.kind(), "decompressed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TooLargeLimit {
    /// A limit of the decompression layer, as recorded in the [`BodyStats`] request extension,
    /// with its configured value (bytes, or the ratio), 0 when unknown.
    Layer(BodyLimit, u64),
    /// The reading extractor's own limit, in bytes.
    Extractor(u64),
    /// The extractor's estimate of the heap the batch's records would take once built, in
    /// bytes (record types that build a tree, such as a JSON map).
    Heap(u64),
    /// A limit that does not say which it was, such as axum's `DefaultBodyLimit`.
    Unspecified,
}

impl TooLargeLimit {
    /// The layer limit recorded in `stats`, or [`Unspecified`](Self::Unspecified).
    pub fn from_stats(stats: Option<&BodyStats>) -> Self {
        stats
            .and_then(BodyStats::exceeded_limit)
            .map_or(Self::Unspecified, |(limit, value)| {
                Self::Layer(limit, value)
            })
    }

    /// The value of the `limit` member of the problem: `compressed`, `decompressed`, `ratio`,
    /// `extractor`, `heap` or `body`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Layer(limit, _) => limit.as_str(),
            Self::Extractor(_) => "extractor",
            Self::Heap(_) => "heap",
            Self::Unspecified => "body",
        }
    }

    /// The problem's human-readable `detail`.
    pub fn detail(self) -> String {
        match self {
            Self::Layer(BodyLimit::Ratio, ratio) if ratio > 0 => format!(
                "the request body exceeds the {} of {ratio} to 1",
                BodyLimit::Ratio.describe()
            ),
            Self::Layer(limit, bytes) if bytes > 0 => format!(
                "the request body exceeds the {} of {bytes} bytes",
                limit.describe()
            ),
            Self::Layer(limit, _) => format!("the request body exceeds the {}", limit.describe()),
            Self::Extractor(bytes) => {
                format!("the request body exceeds the extractor's limit of {bytes} bytes")
            }
            Self::Heap(bytes) => format!(
                "building the batch's records would take more than the heap budget of {bytes} bytes"
            ),
            Self::Unspecified => "the request body exceeds the body size limit".to_owned(),
        }
    }

    /// The 413 `body_too_large` problem, the same wherever a body is stopped.
    ///
    /// ```
    /// use polytomic_webhook_core::body::{BodyLimit, TooLargeLimit};
    ///
    /// let problem = TooLargeLimit::Layer(BodyLimit::Compressed, 1024).problem();
    /// assert_eq!(problem.status(), 413);
    /// assert_eq!(problem.code(), "body_too_large");
    /// assert_eq!(problem.member("limit").unwrap(), "compressed");
    /// ```
    pub fn problem(self) -> Problem {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, BODY_TOO_LARGE, self.detail())
            .with_member("limit", self.kind())
    }
}

/// The problem `code` of every size-limit rejection.
pub const BODY_TOO_LARGE: &str = "body_too_large";

impl fmt::Display for BodyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Live counters of one request body, as the body that decodes it reports them to whoever reads
/// the request's extensions (extractors, tracing).
///
/// Read-only: the decoding body changes the counters through its own
/// `BodyStatsWriter`, which it never shares, so a handler holding the extension cannot forge
/// which limit fired or how many bytes went through. Cloning is cheap and every clone sees the
/// same counters. Updates use relaxed atomics: the values are reports, not synchronisation.
///
/// ```
/// use polytomic_webhook_core::body::BodyStats;
///
/// fn describe(request: &http::Request<()>) -> Option<String> {
///     let stats = request.extensions().get::<BodyStats>()?;
///     Some(format!("{} bytes in, {} decoded", stats.compressed_bytes(), stats.decoded_bytes()))
/// }
/// # assert_eq!(describe(&http::Request::new(())), None);
/// ```
#[derive(Clone, Debug)]
pub struct BodyStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    compressed: AtomicU64,
    decoded: AtomicU64,
    exceeded: AtomicU8,
    limit_bytes: AtomicU64,
    sniffed: AtomicBool,
}

impl Counters {
    fn set_exceeded(&self, limit: BodyLimit) {
        self.exceeded.store(limit.to_u8(), Ordering::Relaxed);
    }

    fn exceed(&self, limit: BodyLimit, value: u64) {
        self.limit_bytes.store(value, Ordering::Relaxed);
        self.set_exceeded(limit);
    }
}

impl BodyStats {
    /// Bytes of the body as received (before decoding) read so far.
    pub fn compressed_bytes(&self) -> u64 {
        self.0.compressed.load(Ordering::Relaxed)
    }

    /// Bytes of decoded body produced so far.
    pub fn decoded_bytes(&self) -> u64 {
        self.0.decoded.load(Ordering::Relaxed)
    }

    /// The limit that stopped the body, if one did.
    pub fn exceeded(&self) -> Option<BodyLimit> {
        BodyLimit::from_u8(self.0.exceeded.load(Ordering::Relaxed))
    }

    /// The configured value of the limit that fired (bytes, or the ratio for
    /// [`BodyLimit::Ratio`]); zero when none fired or it was not recorded.
    pub fn exceeded_limit_value(&self) -> u64 {
        self.0.limit_bytes.load(Ordering::Relaxed)
    }

    /// Whether the body's coding was recognised from its first bytes rather than declared.
    pub fn was_sniffed(&self) -> bool {
        self.0.sniffed.load(Ordering::Relaxed)
    }

    /// The limit that fired and its configured value, if one did.
    pub fn exceeded_limit(&self) -> Option<(BodyLimit, u64)> {
        self.exceeded()
            .map(|limit| (limit, self.exceeded_limit_value()))
    }
}

/// Stand-ins for a decoding body's reports, for tests of the code that reads them (feature
/// `testing`).
#[cfg(any(test, feature = "testing"))]
impl BodyStats {
    /// Fresh counters at zero.
    #[doc(hidden)]
    pub fn new() -> Self {
        Self(Arc::default())
    }

    /// Records which limit stopped the body.
    #[doc(hidden)]
    pub fn set_exceeded(&self, limit: BodyLimit) {
        self.0.set_exceeded(limit);
    }

    /// Records which limit stopped the body and its configured value.
    #[doc(hidden)]
    pub fn set_exceeded_with_value(&self, limit: BodyLimit, value: u64) {
        self.0.exceed(limit, value);
    }
}

/// The counting side of one request body's [`BodyStats`], held by the body that decodes it.
///
/// Not part of the API: it is public only so that the decompression crate can count. Whoever
/// creates the writer hands out [`stats`](Self::stats) clones and keeps the writer.
#[doc(hidden)]
#[derive(Debug)]
pub struct BodyStatsWriter(BodyStats);

impl BodyStatsWriter {
    /// Fresh counters at zero.
    #[allow(clippy::new_without_default)] // A default would be a second way to forge stats.
    pub fn new() -> Self {
        Self(BodyStats(Arc::default()))
    }

    /// The read-only view of these counters, for the request's extensions.
    pub fn stats(&self) -> &BodyStats {
        &self.0
    }

    /// Records that the body's coding was recognised from its first bytes.
    pub fn set_sniffed(&self) {
        self.0.0.sniffed.store(true, Ordering::Relaxed);
    }

    /// Counts received bytes.
    pub fn add_compressed(&self, bytes: u64) {
        self.0.0.compressed.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts decoded bytes.
    pub fn add_decoded(&self, bytes: u64) {
        self.0.0.decoded.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records which limit stopped the body and its configured value.
    pub fn set_exceeded_with_value(&self, limit: BodyLimit, value: u64) {
        self.0.0.exceed(limit, value);
    }
}

/// The error a body yields when a size limit fires: an [`http_body_util::LengthLimitError`].
///
/// That type is `#[non_exhaustive]`, so the only way to obtain one is to let
/// [`http_body_util::Limited`] produce it; this does so once per call on a one-byte body with a
/// zero limit, which completes synchronously. The detour is what makes axum's built-in
/// extractors answer 413 for our limits too.
///
/// ```
/// let error = polytomic_webhook_core::body::length_limit_error();
/// assert!(error.is::<http_body_util::LengthLimitError>());
/// ```
pub fn length_limit_error() -> BoxError {
    let mut body = pin!(Limited::new(Full::new(Bytes::from_static(b"x")), 0));
    match body
        .as_mut()
        .poll_frame(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Some(Err(error))) => error,
        // `Limited` checks the frame it was handed against the limit before yielding it;
        // with a limit of zero and a one-byte frame no other outcome exists.
        _ => unreachable!("Limited with a zero limit always rejects a one-byte frame"),
    }
}

/// Whether a body error means a size limit fired (ours or any `http_body_util::Limited`).
pub fn is_length_limit_error(error: &(dyn Error + 'static)) -> bool {
    error.is::<http_body_util::LengthLimitError>()
}

/// What a body read error means for the client, found by walking the error's `source()` chain
/// (wrappers such as `axum_core::Error` keep the original as their source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyErrorKind {
    /// A size limit fired: answer 413.
    LengthLimit,
    /// The compressed data could not be decoded: answer 400.
    InvalidCompressedBody,
    /// The body did not arrive within its deadline: answer 408.
    Timeout,
    /// Anything else (a reset connection, an I/O error): answer 400.
    Other,
}

impl BodyErrorKind {
    /// Classifies a body error.
    ///
    /// ```
    /// use polytomic_webhook_core::body::{BodyErrorKind, length_limit_error};
    ///
    /// let error = length_limit_error();
    /// assert_eq!(BodyErrorKind::of(&*error), BodyErrorKind::LengthLimit);
    /// ```
    pub fn of(error: &(dyn Error + 'static)) -> Self {
        let mut current = Some(error);
        while let Some(error) = current {
            if is_length_limit_error(error) {
                return Self::LengthLimit;
            }
            if error.is::<InvalidCompressedBody>() {
                return Self::InvalidCompressedBody;
            }
            if error.is::<BodyReadTimeout>() {
                return Self::Timeout;
            }
            current = error.source();
        }
        Self::Other
    }
}

/// The body did not arrive completely within its deadline (a sender trickling bytes, or a
/// stalled connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyReadTimeout {
    after: std::time::Duration,
}

impl BodyReadTimeout {
    /// The deadline that passed, counted from the first read of the body.
    pub fn new(after: std::time::Duration) -> Self {
        Self { after }
    }

    /// The deadline that passed.
    pub fn after(&self) -> std::time::Duration {
        self.after
    }
}

impl fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body was not received within {} ms",
            self.after.as_millis()
        )
    }
}

impl Error for BodyReadTimeout {}

/// The body's compressed data is corrupt or truncated, so it cannot be decoded: the error a
/// decoding body yields, and the 400 `invalid_compressed_body` rejection of whoever reads it.
///
/// ```
/// use std::io;
/// use polytomic_webhook_core::body::{BoxError, InvalidCompressedBody};
///
/// // The decoding body's error...
/// let error = InvalidCompressedBody::new("gzip", io::Error::other("invalid gzip header"));
/// assert_eq!(error.to_string(), "the gzip request body is corrupt or truncated: invalid gzip header");
///
/// // ...as the reader that met it answers.
/// let rejection = InvalidCompressedBody::reading(BoxError::from(error));
/// assert_eq!(rejection.status(), 400);
/// assert_eq!(InvalidCompressedBody::CODE, "invalid_compressed_body");
/// assert_eq!(rejection.coding(), "gzip");
/// assert!(rejection.body_text().starts_with("the request body could not be decompressed: the gzip"));
/// ```
#[derive(Debug)]
pub struct InvalidCompressedBody {
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    /// The decoder's own error.
    Decoder {
        coding: &'static str,
        error: io::Error,
    },
    /// A body error whose `source()` chain holds the decoder's, as a reader met it.
    Read(BoxError),
}

impl InvalidCompressedBody {
    /// Wraps the decoder's error for the named content coding.
    pub fn new(coding: &'static str, source: io::Error) -> Self {
        Self {
            cause: Cause::Decoder {
                coding,
                error: source,
            },
        }
    }

    /// The rejection of a reader whose body ended with `error`, a chain that holds the
    /// decoder's [`InvalidCompressedBody`] (see [`BodyErrorKind::of`]).
    pub fn reading(error: BoxError) -> Self {
        Self {
            cause: Cause::Read(error),
        }
    }

    /// The content coding that failed to decode (`gzip`, `br`, ...), or `unknown` when a
    /// reader's error does not say.
    pub fn coding(&self) -> &'static str {
        match &self.cause {
            Cause::Decoder { coding, .. } => coding,
            Cause::Read(error) => {
                let mut current: Option<&(dyn Error + 'static)> = Some(&**error);
                while let Some(error) = current {
                    if let Some(decoder) = error.downcast_ref::<Self>() {
                        return decoder.coding();
                    }
                    current = error.source();
                }
                "unknown"
            }
        }
    }

    fn detail(&self) -> String {
        match &self.cause {
            Cause::Decoder { coding, error } => {
                format!("the {coding} request body is corrupt or truncated: {error}")
            }
            Cause::Read(error) => bounded(format!(
                "the request body could not be decompressed: {error}"
            )),
        }
    }
}

crate::__define_rejection!(InvalidCompressedBody: BAD_REQUEST, "invalid_compressed_body",
    source = cause);

impl ErrorSource for Cause {
    fn error_source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Decoder { error, .. } => Some(error),
            Self::Read(error) => Some(&**error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limit_error_is_the_type_axum_recognises() {
        let error = length_limit_error();
        assert!(is_length_limit_error(&*error));
        assert!(error.downcast::<http_body_util::LengthLimitError>().is_ok());
    }

    #[test]
    fn classification_sees_through_wrappers() {
        #[derive(Debug)]
        struct Wrapper(BoxError);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapper")
            }
        }
        impl Error for Wrapper {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&*self.0)
            }
        }
        let limit = Wrapper(length_limit_error());
        assert_eq!(BodyErrorKind::of(&limit), BodyErrorKind::LengthLimit);
        let corrupt = Wrapper(Box::new(InvalidCompressedBody::new(
            "gzip",
            io::Error::new(io::ErrorKind::UnexpectedEof, "truncated"),
        )));
        assert_eq!(
            BodyErrorKind::of(&corrupt),
            BodyErrorKind::InvalidCompressedBody
        );
        let timeout = Wrapper(Box::new(BodyReadTimeout::new(
            std::time::Duration::from_secs(1),
        )));
        assert_eq!(BodyErrorKind::of(&timeout), BodyErrorKind::Timeout);
        let other = io::Error::other("reset");
        assert_eq!(BodyErrorKind::of(&other), BodyErrorKind::Other);
    }

    #[test]
    fn stats_start_empty_and_record_the_limit() {
        let stats = BodyStats::new();
        assert_eq!(stats.exceeded(), None);
        stats.set_exceeded_with_value(BodyLimit::Decompressed, 42);
        assert_eq!(stats.exceeded(), Some(BodyLimit::Decompressed));
        assert_eq!(stats.exceeded_limit_value(), 42);
    }

    #[test]
    fn every_view_sees_what_the_writer_counts() {
        let writer = BodyStatsWriter::new();
        let seen_by_extractor = writer.stats().clone();
        writer.add_compressed(10);
        writer.add_decoded(1_000);
        writer.add_decoded(24);
        writer.set_sniffed();
        writer.set_exceeded_with_value(BodyLimit::Ratio, 100);
        assert_eq!(seen_by_extractor.compressed_bytes(), 10);
        assert_eq!(seen_by_extractor.decoded_bytes(), 1_024);
        assert!(seen_by_extractor.was_sniffed());
        assert_eq!(
            seen_by_extractor.exceeded_limit(),
            Some((BodyLimit::Ratio, 100))
        );
    }

    #[test]
    fn invalid_compressed_body_names_coding_and_keeps_source() {
        let error = InvalidCompressedBody::new(
            "gzip",
            io::Error::new(io::ErrorKind::InvalidData, "bad crc"),
        );
        assert!(error.to_string().contains("gzip"));
        assert!(error.source().is_some());
    }

    #[test]
    fn a_reader_answers_with_the_decoders_coding_through_wrappers() {
        let decoder = InvalidCompressedBody::new("br", io::Error::other("bad window"));
        let wrapped: BoxError = Box::new(axum_core::Error::new(decoder));
        let rejection = InvalidCompressedBody::reading(wrapped);
        assert_eq!(rejection.coding(), "br");
        let problem = rejection.to_problem();
        assert_eq!(problem.status(), StatusCode::BAD_REQUEST);
        assert_eq!(problem.code(), "invalid_compressed_body");
        assert_eq!(
            problem.detail(),
            "the request body could not be decompressed: \
             the br request body is corrupt or truncated: bad window"
        );
        // The chain goes on through the wrapper to the decoder's error.
        let wrapper = rejection.source().unwrap();
        assert!(wrapper.is::<axum_core::Error>());
        assert!(wrapper.source().unwrap().is::<InvalidCompressedBody>());
    }

    #[test]
    fn a_readers_detail_is_bounded() {
        let decoder = InvalidCompressedBody::new("gzip", io::Error::other("x".repeat(4096)));
        let rejection = InvalidCompressedBody::reading(Box::new(decoder));
        assert!(rejection.body_text().len() <= crate::problem::MAX_ECHO + 3);
        assert_eq!(
            InvalidCompressedBody::reading(Box::new(io::Error::other("reset"))).coding(),
            "unknown"
        );
    }
}
