//! Content codings: which ones exist, which are compiled in, and how `Content-Encoding` is read.

use std::fmt;

use http::HeaderMap;
use http::header::{CONTENT_ENCODING, HeaderValue};

/// The most codings a request may ever stack (`Content-Encoding: gzip, br` is two), whatever
/// [`max_codings`](crate::DecompressionConfig::max_codings) says.
///
/// Real senders apply one (Polytomic applies one gzip layer), which is why stacking is off by
/// default; a longer list is far more likely an attack on the decoder than a legitimate
/// request, and each level multiplies the work one request can cause.
pub const MAX_STACKED_CODINGS: usize = 3;

/// A content coding this layer can decode (when its cargo feature is on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Coding {
    /// `gzip`, also accepted as `x-gzip` (feature `gzip`, on by default).
    Gzip,
    /// `deflate`: the zlib format, as HTTP defines it (feature `deflate`).
    Deflate,
    /// `br`: Brotli (feature `br`).
    Brotli,
    /// `zstd`: Zstandard (feature `zstd`).
    Zstd,
}

impl Coding {
    /// Every coding, compiled in or not.
    pub const ALL: [Self; 4] = [Self::Gzip, Self::Deflate, Self::Brotli, Self::Zstd];

    /// The coding's name as it appears in `Content-Encoding`.
    ///
    /// ```
    /// use polytomic_webhook_decompression::Coding;
    ///
    /// assert_eq!(Coding::Brotli.as_str(), "br");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Brotli => "br",
            Self::Zstd => "zstd",
        }
    }

    /// Whether this build can decode the coding (its cargo feature is on).
    pub fn is_enabled(self) -> bool {
        match self {
            Self::Gzip => cfg!(feature = "gzip"),
            Self::Deflate => cfg!(feature = "deflate"),
            Self::Brotli => cfg!(feature = "br"),
            Self::Zstd => cfg!(feature = "zstd"),
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|coding| token.eq_ignore_ascii_case(coding.as_str()))
            .or_else(|| token.eq_ignore_ascii_case("x-gzip").then_some(Self::Gzip))
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The codings a request declares, in the order the sender applied them (`identity` dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codings {
    /// Only the first `len` entries are meaningful.
    codings: [Coding; MAX_STACKED_CODINGS],
    len: usize,
}

impl Default for Codings {
    fn default() -> Self {
        Self {
            codings: [Coding::Gzip; MAX_STACKED_CODINGS],
            len: 0,
        }
    }
}

impl Codings {
    /// The codings in the order they were applied; decoding runs through them backwards.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Coding> + ExactSizeIterator + '_ {
        self.codings[..self.len].iter().copied()
    }

    /// Whether no coding (other than `identity`) was declared.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many codings were declared.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The codings in `applied` (in the order the sender applied them), if this build decodes
    /// every one and there are at most [`MAX_STACKED_CODINGS`].
    ///
    /// ```
    /// use polytomic_webhook_decompression::{Coding, Codings};
    ///
    /// let codings = Codings::new(&[Coding::Gzip]).unwrap();
    /// assert_eq!(codings.to_string(), "gzip");
    /// assert!(Codings::new(&[Coding::Gzip; 4]).is_err());
    /// ```
    pub fn new(applied: &[Coding]) -> Result<Self, UnsupportedContentEncoding> {
        let mut codings = Self::default();
        for &coding in applied {
            if !coding.is_enabled() {
                return Err(UnsupportedContentEncoding::Unknown(
                    coding.as_str().to_owned(),
                ));
            }
            if !codings.push(coding) {
                return Err(UnsupportedContentEncoding::TooManyStacked {
                    allowed: MAX_STACKED_CODINGS,
                });
            }
        }
        Ok(codings)
    }

    fn push(&mut self, coding: Coding) -> bool {
        match self.codings.get_mut(self.len) {
            Some(slot) => {
                *slot = coding;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Reads every `Content-Encoding` header of a request.
    ///
    /// Matching is case-insensitive, whitespace around list elements is ignored, empty list
    /// elements are skipped (RFC 9110 §5.6.1) and `identity` means "no coding".
    ///
    /// ```
    /// use http::{HeaderMap, HeaderValue, header::CONTENT_ENCODING};
    /// use polytomic_webhook_decompression::{Coding, Codings};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(CONTENT_ENCODING, HeaderValue::from_static(" X-GZIP "));
    /// let codings = Codings::from_headers(&headers).unwrap();
    /// assert_eq!(codings.iter().collect::<Vec<_>>(), [Coding::Gzip]);
    ///
    /// headers.insert(CONTENT_ENCODING, HeaderValue::from_static("compress"));
    /// assert!(Codings::from_headers(&headers).is_err());
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, UnsupportedContentEncoding> {
        Self::from_headers_at_most(headers, MAX_STACKED_CODINGS)
    }

    /// [`from_headers`](Self::from_headers), refusing more than `allowed` codings (at most
    /// [`MAX_STACKED_CODINGS`]) as soon as the list passes it.
    pub(crate) fn from_headers_at_most(
        headers: &HeaderMap,
        allowed: usize,
    ) -> Result<Self, UnsupportedContentEncoding> {
        let mut codings = Self::default();
        for value in headers.get_all(CONTENT_ENCODING) {
            let text = value
                .to_str()
                .map_err(|_| UnsupportedContentEncoding::NotText)?;
            for token in text
                .split(',')
                .map(str::trim)
                .filter(|token| !token.is_empty())
            {
                if token.eq_ignore_ascii_case("identity") {
                    continue;
                }
                let coding = Coding::from_token(token)
                    .filter(|coding| coding.is_enabled())
                    .ok_or_else(|| UnsupportedContentEncoding::Unknown(truncated(token)))?;
                if codings.len() >= allowed || !codings.push(coding) {
                    return Err(UnsupportedContentEncoding::TooManyStacked {
                        allowed: allowed.min(MAX_STACKED_CODINGS),
                    });
                }
            }
        }
        Ok(codings)
    }
}

impl From<Coding> for Codings {
    fn from(coding: Coding) -> Self {
        let mut codings = Self::default();
        codings.push(coding);
        codings
    }
}

impl fmt::Display for Codings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("identity");
        }
        for (index, coding) in self.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            f.write_str(coding.as_str())?;
        }
        Ok(())
    }
}

/// Why a request's `Content-Encoding` cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsupportedContentEncoding {
    /// A coding this build does not decode (its name, shortened if long).
    Unknown(String),
    /// More codings than allowed: the configured
    /// [`max_codings`](crate::DecompressionConfig::max_codings), never more than
    /// [`MAX_STACKED_CODINGS`].
    TooManyStacked {
        /// How many codings one request may declare.
        allowed: usize,
    },
    /// The header value is not visible ASCII.
    NotText,
}

impl std::error::Error for UnsupportedContentEncoding {}

impl fmt::Display for UnsupportedContentEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(token) => write!(f, "the content coding {token:?} is not supported"),
            Self::TooManyStacked { allowed } if *allowed >= MAX_STACKED_CODINGS => write!(
                f,
                "more than {MAX_STACKED_CODINGS} stacked content codings are not supported"
            ),
            // Below the hard maximum, the refusal is a setting the receiver's operator can change.
            Self::TooManyStacked { allowed: 0 | 1 } => write!(
                f,
                "stacked content codings are not accepted: this receiver decodes one coding per \
                 request (the decompression setting `max_codings`, up to {MAX_STACKED_CODINGS}, \
                 accepts more)"
            ),
            Self::TooManyStacked { allowed } => write!(
                f,
                "more than {allowed} stacked content codings are not accepted (the decompression \
                 setting `max_codings`, up to {MAX_STACKED_CODINGS}, accepts more)"
            ),
            Self::NotText => f.write_str("the Content-Encoding header is not valid text"),
        }
    }
}

/// The value of `Accept-Encoding` sent with a 415: every coding this build decodes.
pub(crate) fn accept_encoding() -> HeaderValue {
    let mut value = String::new();
    for coding in Coding::ALL.into_iter().filter(|coding| coding.is_enabled()) {
        value.push_str(coding.as_str());
        value.push_str(", ");
    }
    value.push_str("identity");
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("identity"))
}

/// Echoing an attacker's header back is fine, echoing a megabyte of it is not.
fn truncated(token: &str) -> String {
    const MAX: usize = 32;
    match token.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &token[..end]),
        None => token.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Vec<Coding>, UnsupportedContentEncoding> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        Codings::from_headers(&headers).map(|codings| codings.iter().collect())
    }

    #[test]
    fn matching_is_case_insensitive_and_trims_whitespace() {
        for value in ["gzip", "GZIP", "x-gzip", "X-Gzip", " gzip ", "\tgzip"] {
            assert_eq!(parse(&[value]), Ok(vec![Coding::Gzip]), "{value:?}");
        }
    }

    #[test]
    fn identity_and_empty_elements_mean_nothing() {
        assert_eq!(parse(&[]), Ok(vec![]));
        assert_eq!(parse(&["identity"]), Ok(vec![]));
        assert_eq!(parse(&["Identity, gzip,,"]), Ok(vec![Coding::Gzip]));
    }

    #[test]
    fn lists_keep_the_order_of_application_across_headers() {
        assert_eq!(parse(&["gzip, gzip", "gzip"]).unwrap().len(), 3);
        assert_eq!(
            parse(&["gzip", "gzip, gzip, gzip"]),
            Err(UnsupportedContentEncoding::TooManyStacked { allowed: 3 })
        );
    }

    #[test]
    fn unknown_codings_are_named_but_truncated() {
        assert_eq!(
            parse(&["compress"]),
            Err(UnsupportedContentEncoding::Unknown("compress".into()))
        );
        let long = "a".repeat(10_000);
        let Err(UnsupportedContentEncoding::Unknown(token)) = parse(&[&long]) else {
            panic!("a long unknown coding must be refused");
        };
        assert!(token.len() < 40);
    }

    #[test]
    fn accept_encoding_lists_gzip_and_identity() {
        let value = accept_encoding();
        let value = value.to_str().unwrap();
        assert!(value.contains("gzip"), "{value}");
        assert!(value.ends_with("identity"), "{value}");
    }
}
