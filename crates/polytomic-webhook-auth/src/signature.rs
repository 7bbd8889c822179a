//! The HMAC signature of Polytomic's organisation Events webhooks.
//!
//! Polytomic's organisation-level Events webhook (the one that reports `sync.completed`,
//! `bulk_sync.failed` and so on) carries no bearer token. Instead each delivery has a
//! `Polytomic-Signature` header: an HMAC-SHA256 of the request body keyed with the secret chosen
//! when the webhook was created. [`SigningSecrets`] holds one or more such secrets (several
//! while one is rotated) and checks a body against a presented [`Signature`].
//!
//! # Which header values are accepted, and why
//!
//! Polytomic documents that the header holds an HMAC of the body, but not how its 32 bytes are
//! written. Rather than guess one spelling and refuse every delivery if the guess is wrong, the
//! header is decoded first, and the decoded bytes are compared. Accepted are:
//!
//! - 64 hexadecimal digits, lowercase or uppercase;
//! - base64 in the standard (`+/`) or URL-safe (`-_`) alphabet, with or without `=` padding;
//! - either of those after a `sha256=` prefix (any letter case), the form GitHub and others use.
//!
//! Anything else, including a value that decodes to a length other than 32 bytes, is refused as
//! `invalid_signature` without computing any HMAC. Accepting several spellings of the same 32
//! bytes gives a forger nothing: whatever the spelling, the decoded bytes must equal the HMAC.
//!
//! # Why the comparison does not leak the expected signature
//!
//! Each configured secret's HMAC of the body is compared with the presented bytes by
//! [`subtle::ConstantTimeEq`], every secret is tried whatever the earlier results, and the
//! results are combined with a bitwise `|`. So neither how many leading bytes of a guess were
//! right nor which secret matched changes the work done.
//!
//! ```
//! use polytomic_webhook_auth::signature::{SignatureError, SigningSecrets, sign_hex};
//!
//! let secrets = SigningSecrets::try_from_iter(["new-secret", "old-secret"])?;
//! let body = br#"{"id":"e1","type":"sync.completed"}"#;
//!
//! let header = sign_hex("old-secret", body);
//! assert_eq!(secrets.verify_header(header.as_bytes(), body), Ok(()));
//! assert_eq!(
//!     secrets.verify_header(header.as_bytes(), b"{}"),
//!     Err(SignatureError::Mismatch),
//! );
//! assert_eq!(
//!     secrets.verify_header(b"not a signature", body),
//!     Err(SignatureError::Malformed),
//! );
//! # Ok::<(), polytomic_webhook_auth::InvalidSecret>(())
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, GeneralPurpose as Engine};
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use http::header::HeaderName;
use polytomic_webhook_core::__define_rejection;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::secret::{InvalidSecret, is_header_char, validated};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("polytomic-signature");

/// The length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A decoded signature: the 32 bytes a body's HMAC must equal.
///
/// `Debug` does not show the bytes: a valid signature is a credential for its body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; TAG_LEN]);

impl Signature {
    /// Decodes one header value (see the [module docs](self) for the accepted spellings).
    ///
    /// ```
    /// use polytomic_webhook_auth::signature::Signature;
    ///
    /// let hex = "5d".repeat(32);
    /// let from_hex = Signature::decode(hex.as_bytes()).unwrap();
    /// let upper = Signature::decode(hex.to_uppercase().as_bytes()).unwrap();
    /// let base64 = Signature::decode(b"sha256=XV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV0=").unwrap();
    /// let url_safe = Signature::decode(b"XV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV0").unwrap();
    /// assert!(from_hex == upper && upper == base64 && base64 == url_safe);
    /// assert!(Signature::decode(b"5d5d").is_none());
    /// ```
    pub fn decode(value: &[u8]) -> Option<Self> {
        if !value.iter().copied().all(is_header_char) {
            return None;
        }
        let value = value.trim_ascii();
        let value = match value.get(..PREFIX.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(PREFIX) => &value[PREFIX.len()..],
            _ => value,
        };
        if value.len() == 2 * TAG_LEN {
            return decode_hex(value).map(Self);
        }
        // 32 bytes are 43 base64 characters, 44 with the one `=` of padding.
        if !(43..=44).contains(&value.len()) {
            return None;
        }
        [STANDARD, URL_SAFE].iter().find_map(|engine| {
            let mut tag = [0; TAG_LEN];
            match engine.decode_slice(value, &mut tag) {
                Ok(TAG_LEN) => Some(Self(tag)),
                _ => None,
            }
        })
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(<redacted>)")
    }
}

const PREFIX: &[u8] = b"sha256=";

/// Padding is optional: some encoders drop it, and it carries no information.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: Engine = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE: Engine = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

fn decode_hex(text: &[u8]) -> Option<[u8; TAG_LEN]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let mut tag = [0; TAG_LEN];
    for (byte, pair) in tag.iter_mut().zip(text.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(tag)
}

/// Reads the request's single `Polytomic-Signature` header, without decoding it.
///
/// `Missing` when there is none, `Malformed` when there are several.
pub fn signature_header(headers: &HeaderMap) -> Result<&[u8], SignatureError> {
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let value = values.next().ok_or(SignatureError::Missing)?;
    if values.next().is_some() {
        return Err(SignatureError::Malformed);
    }
    Ok(value.as_bytes())
}

/// One or more secrets that a delivery's HMAC may be keyed with (several while rotating).
///
/// Each secret is validated like a bearer [`Secret`](crate::Secret): surrounding spaces and
/// tabs are trimmed, and an empty value or one with characters outside visible ASCII is
/// refused. Only the HMAC key schedule derived from each secret is kept, not the text itself.
/// `Debug` prints the number of secrets only.
#[derive(Clone)]
pub struct SigningSecrets {
    // Never empty.
    keys: Vec<HmacSha256>,
}

impl SigningSecrets {
    /// One secret.
    pub fn new(secret: impl Into<String>) -> Result<Self, InvalidSecret> {
        Self::try_from_iter([secret])
    }

    /// Several secrets, refusing an invalid value or an empty list.
    pub fn try_from_iter<I>(values: I) -> Result<Self, InvalidSecret>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let keys = values
            .into_iter()
            .map(|value| key(value.into()))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(InvalidSecret::NoSecrets);
        }
        Ok(Self { keys })
    }

    /// Adds another accepted secret.
    pub fn with(mut self, secret: impl Into<String>) -> Result<Self, InvalidSecret> {
        self.keys.push(key(secret.into())?);
        Ok(self)
    }

    /// How many secrets are accepted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always `false`: there is at least one secret.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `signature` is the HMAC-SHA256 of `body` under any of the secrets, comparing
    /// with every secret in constant time (see the [module docs](self)).
    pub fn verify(&self, signature: &Signature, body: &[u8]) -> bool {
        let mut verifier = self.verifier(*signature);
        verifier.update(body);
        verifier.matches()
    }

    /// Starts verifying `signature` over a body that arrives in pieces (a decoder's output,
    /// say), so the body never has to be held whole; see [`SignatureVerifier`].
    pub fn verifier(&self, signature: Signature) -> SignatureVerifier {
        SignatureVerifier {
            signature,
            macs: self.keys.clone(),
        }
    }

    /// Decodes a header value and verifies it over `body`: `Malformed` when it does not decode,
    /// `Mismatch` when no secret's HMAC equals it.
    pub fn verify_header(&self, value: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        let signature = Signature::decode(value).ok_or(SignatureError::Malformed)?;
        if self.verify(&signature, body) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The HMAC of a body under every configured secret, fed piece by piece, then compared with
/// a signature exactly as [`SigningSecrets::verify`] compares it (every secret, constant time).
///
/// `Debug` shows neither the signature nor any key.
///
/// ```
/// use polytomic_webhook_auth::signature::{Signature, SigningSecrets, sign_hex};
///
/// let secrets = SigningSecrets::new("s3cret")?;
/// let signature = Signature::decode(sign_hex("s3cret", b"{\"id\":\"e1\"}").as_bytes()).unwrap();
/// let mut verifier = secrets.verifier(signature);
/// for piece in [&b"{\"id\""[..], b":\"e1\"}"] {
///     verifier.update(piece);
/// }
/// assert!(verifier.matches());
/// # Ok::<(), polytomic_webhook_auth::InvalidSecret>(())
/// ```
#[derive(Clone)]
pub struct SignatureVerifier {
    signature: Signature,
    macs: Vec<HmacSha256>,
}

impl SignatureVerifier {
    /// Feeds the next bytes of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        for mac in &mut self.macs {
            mac.update(bytes);
        }
    }

    /// Whether the bytes fed so far, under any secret, have the signature's HMAC.
    pub fn matches(self) -> bool {
        let mut matched = Choice::from(0);
        for mac in self.macs {
            let tag = mac.finalize().into_bytes();
            matched |= tag.as_slice().ct_eq(&self.signature.0);
        }
        matched.into()
    }
}

impl fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("secrets", &self.macs.len())
            .finish_non_exhaustive()
    }
}

fn key(value: String) -> Result<HmacSha256, InvalidSecret> {
    let value = Zeroizing::new(value);
    let trimmed = validated(&value)?;
    // HMAC takes a key of any length, so this cannot fail; the error is mapped, not unwrapped.
    HmacSha256::new_from_slice(trimmed.as_bytes()).map_err(|_| InvalidSecret::Empty)
}

/// Deserializes from one string or a non-empty list of strings, like
/// [`SecretSet`](crate::SecretSet). The deserializer's own buffers may keep a copy of a value;
/// the copies made here are zeroed.
impl<'de> serde::Deserialize<'de> for SigningSecrets {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(
            untagged,
            expecting = "a secret string or a non-empty list of secret strings"
        )]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let values: Vec<Zeroizing<String>> = match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(value) => vec![Zeroizing::new(value)],
            OneOrMany::Many(values) => values.into_iter().map(Zeroizing::new).collect(),
        };
        Self::try_from_iter(values.iter().map(|value| value.as_str()))
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningSecrets")
            .field("len", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The lowercase-hex HMAC-SHA256 of `body` keyed with `secret` (trimmed like a configured
/// secret): what a sender puts in `Polytomic-Signature`. For tests and tools.
pub fn sign_hex(secret: &str, body: &[u8]) -> String {
    hex(&sign(secret, body))
}

/// How a sender may write a signature's 32 bytes: every spelling [`Signature::decode`] accepts.
///
/// ```
/// use polytomic_webhook_auth::signature::{Signature, SignatureEncoding, sign};
///
/// let tag = sign("secret", b"{}");
/// for encoding in SignatureEncoding::ALL {
///     for prefixed in [false, true] {
///         let text = encoding.encode(&tag, prefixed);
///         assert_eq!(Signature::decode(text.as_bytes()), Signature::decode(encoding.encode(&tag, false).as_bytes()));
///     }
/// }
/// assert!(SignatureEncoding::Base64Url.encode(&tag, true).starts_with("sha256="));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureEncoding {
    /// Lowercase hexadecimal.
    #[default]
    Hex,
    /// Uppercase hexadecimal.
    HexUpper,
    /// Standard base64 with `=` padding.
    Base64,
    /// Standard base64 without padding.
    Base64NoPad,
    /// URL-safe base64 with `=` padding.
    Base64Url,
    /// URL-safe base64 without padding.
    Base64UrlNoPad,
}

impl SignatureEncoding {
    /// Every accepted encoding.
    pub const ALL: [Self; 6] = [
        Self::Hex,
        Self::HexUpper,
        Self::Base64,
        Self::Base64NoPad,
        Self::Base64Url,
        Self::Base64UrlNoPad,
    ];

    /// Writes `tag` in this encoding, after `sha256=` when `prefixed`.
    pub fn encode(self, tag: &[u8; TAG_LEN], prefixed: bool) -> String {
        use base64::engine::general_purpose as b64;

        let text = match self {
            Self::Hex => hex(tag),
            Self::HexUpper => hex(tag).to_uppercase(),
            Self::Base64 => b64::STANDARD.encode(tag),
            Self::Base64NoPad => b64::STANDARD_NO_PAD.encode(tag),
            Self::Base64Url => b64::URL_SAFE.encode(tag),
            Self::Base64UrlNoPad => b64::URL_SAFE_NO_PAD.encode(tag),
        };
        if prefixed {
            format!("sha256={text}")
        } else {
            text
        }
    }
}

fn hex(tag: &[u8]) -> String {
    use std::fmt::Write as _;

    let mut text = String::with_capacity(2 * tag.len());
    for byte in tag {
        // Writing to a `String` cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The raw HMAC-SHA256 of `body` keyed with `secret` (trimmed like a configured secret).
pub fn sign(secret: &str, body: &[u8]) -> [u8; TAG_LEN] {
    // Any key length is valid for HMAC, so `new_from_slice` never fails here.
    let mut mac = HmacSha256::new_from_slice(secret.trim_matches([' ', '\t']).as_bytes())
        .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
    mac.update(body);
    mac.finalize().into_bytes().into()
}

__define_rejection! {
    /// Why a delivery's signature was refused. Every variant answers 401; none carries any part
    /// of the presented value or of a secret.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum SignatureError {
        /// No `Polytomic-Signature` header (`missing_signature`).
        #[rejection(UNAUTHORIZED, "missing_signature")]
        Missing => "the request has no Polytomic-Signature header";
        /// Several headers, or a value that is not 32 bytes in one of the accepted spellings (`invalid_signature`).
        #[rejection(UNAUTHORIZED, "invalid_signature")]
        Malformed => "the Polytomic-Signature header is not one HMAC-SHA256 in hex or base64";
        /// A well-formed signature that is not the HMAC of the body under any configured
        /// secret (`invalid_signature`).
        #[rejection(UNAUTHORIZED, "invalid_signature")]
        Mismatch =>
            "the Polytomic-Signature header does not match the body under any configured secret";
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{
        STANDARD as STANDARD_PADDED, STANDARD_NO_PAD, URL_SAFE as URL_SAFE_PADDED, URL_SAFE_NO_PAD,
    };
    use http::StatusCode;

    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"sync.completed","event":{"total_records":3}}"#;

    fn secrets() -> SigningSecrets {
        SigningSecrets::new("events-secret").unwrap()
    }

    /// Every accepted spelling of the same tag.
    fn spellings(tag: [u8; TAG_LEN]) -> Vec<String> {
        let hex = sign_hex("events-secret", BODY);
        let mut forms = vec![hex.clone(), hex.to_uppercase()];
        for engine in [
            STANDARD_PADDED,
            STANDARD_NO_PAD,
            URL_SAFE_PADDED,
            URL_SAFE_NO_PAD,
        ] {
            forms.push(engine.encode(tag));
        }
        let prefixed: Vec<String> = forms
            .iter()
            .flat_map(|form| [format!("sha256={form}"), format!("SHA256={form}")])
            .collect();
        forms.extend(prefixed);
        forms
    }

    #[test]
    fn signature_encoding_writes_each_spelling() {
        let tag = sign("events-secret", BODY);
        // `spellings` writes them independently of `SignatureEncoding`, in the same order.
        let forms = spellings(tag);
        for (encoding, expected) in SignatureEncoding::ALL.iter().zip(&forms) {
            assert_eq!(&encoding.encode(&tag, false), expected, "{encoding:?}");
            assert_eq!(encoding.encode(&tag, true), format!("sha256={expected}"));
        }
    }

    #[test]
    fn known_vector_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign_hex("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn every_documented_spelling_is_accepted() {
        let tag = sign("events-secret", BODY);
        // The tag must need both base64 alphabets' special characters for the test to tell
        // the alphabets apart; the body above was picked so it does.
        let standard = STANDARD_PADDED.encode(tag);
        assert!(standard.contains(['+', '/']), "{standard}");
        for form in spellings(tag) {
            assert_eq!(
                secrets().verify_header(form.as_bytes(), BODY),
                Ok(()),
                "{form}"
            );
        }
    }

    #[test]
    fn a_body_changed_by_one_byte_is_refused_in_every_spelling() {
        let mut changed = BODY.to_vec();
        changed[10] ^= 1;
        for form in spellings(sign("events-secret", BODY)) {
            assert_eq!(
                secrets().verify_header(form.as_bytes(), &changed),
                Err(SignatureError::Mismatch),
                "{form}"
            );
        }
    }

    #[test]
    fn a_signature_with_another_secret_is_refused() {
        let header = sign_hex("another-secret", BODY);
        assert_eq!(
            secrets().verify_header(header.as_bytes(), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_each_secret_and_nothing_else() {
        let set = SigningSecrets::new("new-secret")
            .unwrap()
            .with("old-secret")
            .unwrap();
        assert_eq!(set.len(), 2);
        for secret in ["new-secret", "old-secret"] {
            let header = sign_hex(secret, BODY);
            assert_eq!(set.verify_header(header.as_bytes(), BODY), Ok(()));
        }
        let header = sign_hex("retired-secret", BODY);
        assert_eq!(
            set.verify_header(header.as_bytes(), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn other_spellings_are_malformed() {
        let hex = sign_hex("events-secret", BODY);
        let base64 = STANDARD_PADDED.encode(sign("events-secret", BODY));
        // Both alphabets at once: a `+` of the standard one next to a `_` of the URL-safe one.
        let mixed = base64.replacen('/', "_", 1);
        assert!(mixed.contains('+') && mixed.contains('_'), "{mixed}");
        for value in [
            String::new(),
            "sha256=".to_owned(),
            hex[..62].to_owned(),
            format!("{hex}00"),
            format!("sha1={hex}"),
            hex.replacen(&hex[..1], "g", 1),
            format!("{base64}=="),
            base64.replace('=', "*"),
            "v1,".to_owned() + &base64,
            mixed,
        ] {
            assert_eq!(
                secrets().verify_header(value.as_bytes(), BODY),
                Err(SignatureError::Malformed),
                "{value}"
            );
        }
        assert_eq!(Signature::decode(b"\xff\xfe"), None);
    }

    #[test]
    fn the_header_must_be_present_once() {
        let mut headers = HeaderMap::new();
        assert_eq!(signature_header(&headers), Err(SignatureError::Missing));
        headers.insert(SIGNATURE_HEADER, "abc".parse().unwrap());
        assert_eq!(signature_header(&headers), Ok(&b"abc"[..]));
        headers.append(SIGNATURE_HEADER, "def".parse().unwrap());
        assert_eq!(signature_header(&headers), Err(SignatureError::Malformed));
    }

    #[test]
    fn codes_and_statuses() {
        assert_eq!(SignatureError::Missing.code(), "missing_signature");
        assert_eq!(SignatureError::Malformed.code(), "invalid_signature");
        assert_eq!(SignatureError::Mismatch.code(), "invalid_signature");
        for error in [
            SignatureError::Missing,
            SignatureError::Malformed,
            SignatureError::Mismatch,
        ] {
            let problem = error.to_problem();
            assert_eq!(problem.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(problem.code(), error.code());
        }
    }

    #[test]
    fn secrets_and_signatures_are_redacted() {
        let set = SigningSecrets::try_from_iter(["hunter2-secret", "other-secret"]).unwrap();
        let signature = Signature::decode(sign_hex("hunter2-secret", BODY).as_bytes()).unwrap();
        let hex = sign_hex("hunter2-secret", BODY);
        for text in [
            format!("{set:?}"),
            format!("{set:#?}"),
            format!("{signature:?}"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("other-secret"), "{text}");
            assert!(!text.contains(&hex[..8]), "{text}");
        }
        for error in [
            SignatureError::Missing,
            SignatureError::Malformed,
            SignatureError::Mismatch,
        ] {
            let problem = String::from_utf8(error.to_problem().to_json().to_vec()).unwrap();
            assert!(!problem.contains(&hex[..8]), "{problem}");
        }
    }

    #[test]
    fn deserializes_a_string_or_a_list_without_echoing_values() {
        let one: SigningSecrets = serde_json::from_str(r#""solo-secret""#).unwrap();
        assert_eq!(one.len(), 1);
        let header = sign_hex("solo-secret", BODY);
        assert_eq!(one.verify_header(header.as_bytes(), BODY), Ok(()));
        let two: SigningSecrets = serde_json::from_str(r#"["a-secret", "b-secret"]"#).unwrap();
        assert_eq!(two.len(), 2);
        let error = serde_json::from_str::<SigningSecrets>("[]").unwrap_err();
        assert!(error.to_string().contains("at least one secret"), "{error}");
        let error =
            serde_json::from_str::<SigningSecrets>(r#"["ok", "bad\u0001value"]"#).unwrap_err();
        assert!(!error.to_string().contains("bad"), "{error}");
    }

    #[test]
    fn invalid_secrets_are_refused() {
        assert_eq!(SigningSecrets::new("  ").unwrap_err(), InvalidSecret::Empty);
        assert_eq!(
            SigningSecrets::new("bad\nsecret").unwrap_err(),
            InvalidSecret::InvalidCharacter
        );
        assert_eq!(
            SigningSecrets::try_from_iter(Vec::<String>::new()).unwrap_err(),
            InvalidSecret::NoSecrets
        );
    }
}
