//! The shared secrets a delivery's bearer token is checked against.
//!
//! Polytomic sends the value entered as the connection's *Secret* verbatim as a bearer token. A
//! [`Secret`] keeps only the SHA-256 digest of that value; a [`SecretSet`] holds one or more of
//! them so that a secret can be rotated without downtime: configure the new secret next to the
//! old one, change it in Polytomic, then drop the old one.
//!
//! # Why the comparison cannot leak the secret through timing
//!
//! A naive `==` on strings returns as soon as two bytes differ, and returns at once when the
//! lengths differ, so response times tell an attacker how much of a guess was right, or how long
//! the secret is. Here both sides are first reduced to 32-byte SHA-256 digests: the secrets'
//! digests are computed once at construction, the presented token's once per request. The
//! digests are then compared with [`subtle::ConstantTimeEq`], which examines all 32 bytes of
//! every pair without branching on their contents, and the per-secret results are combined with
//! a bitwise `|` over the whole set, with no early exit. So:
//!
//! - the comparison always processes exactly 32 bytes per configured secret, whatever the
//!   secrets' lengths or contents and whatever was presented, so neither the position of the
//!   first difference nor the secrets' lengths influence its duration;
//! - the only length-dependent work is hashing the presented token, whose length the sender
//!   already knows;
//! - which secret matched (the first, the last or none) makes no difference to the work done.
//!
//! Hashing is not used for secrecy of the stored value here (the digest of a weak secret can
//! be brute-forced offline); it only makes both sides the same fixed length.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

/// A SHA-256 digest, zeroed when dropped.
type SecretDigest = Zeroizing<[u8; 32]>;

fn sha256(bytes: &[u8]) -> SecretDigest {
    Zeroizing::new(Sha256::digest(bytes).into())
}

/// Whether `byte` may appear in an `Authorization` header value that this crate accepts:
/// visible ASCII, space or horizontal tab.
pub(crate) fn is_header_char(byte: u8) -> bool {
    matches!(byte, b'\t' | b' '..=b'~')
}

/// A configured secret without its surrounding spaces and tabs, refused when that leaves
/// nothing or a character no header can carry. Shared by every kind of secret.
pub(crate) fn validated(value: &str) -> Result<&str, InvalidSecret> {
    let trimmed = value.trim_matches([' ', '\t']);
    if trimmed.is_empty() {
        return Err(InvalidSecret::Empty);
    }
    if !trimmed.bytes().all(is_header_char) {
        return Err(InvalidSecret::InvalidCharacter);
    }
    Ok(trimmed)
}

/// A shared secret that a delivery's bearer token must match.
///
/// Built from the value configured as the webhook connection's *Secret* in Polytomic. The value
/// is treated as opaque (the sample in Polytomic's documentation is a JWT, accepted verbatim);
/// surrounding spaces and tabs are trimmed, as they are from the presented token. A value that
/// is empty once trimmed, or that contains a character no `Authorization` header can carry
/// (control characters, non-ASCII), is refused with [`InvalidSecret`] because it could never
/// match.
///
/// Only the SHA-256 digest of the value is kept, zeroed on drop; the owned copy of the value
/// taken at construction is zeroed before [`Secret::new`] returns. A `&str` passed in is the
/// caller's to protect. `Debug` and `Display` print `<redacted>`.
///
/// ```
/// use polytomic_webhook_auth::{InvalidSecret, Secret};
///
/// let secret = Secret::new("s3cr3t-value")?;
/// assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
/// assert!(secret.matches("s3cr3t-value"));
/// assert!(!secret.matches("s3cr3t"));
///
/// assert_eq!(Secret::new("   "), Err(InvalidSecret::Empty));
/// # Ok::<(), InvalidSecret>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    digest: SecretDigest,
}

impl Secret {
    /// Validates `value` and keeps its digest.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidSecret> {
        let value = Zeroizing::new(value.into());
        Ok(Self {
            digest: sha256(validated(&value)?.as_bytes()),
        })
    }

    /// Whether `token` equals this secret, in constant time (see the [module docs](self)).
    ///
    /// To check against several secrets use [`SecretSet::matches`], which compares all of them.
    pub fn matches(&self, token: impl AsRef<[u8]>) -> bool {
        self.matches_digest(&sha256(token.as_ref())).into()
    }

    fn matches_digest(&self, presented: &[u8; 32]) -> Choice {
        // Both slices are always 32 bytes, so `ct_eq`'s length check never short-circuits.
        self.digest[..].ct_eq(&presented[..])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// Equality of secrets is only used by tests and configuration code; it compares digests in
// constant time all the same.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches_digest(&other.digest).into()
    }
}

impl Eq for Secret {}

impl FromStr for Secret {
    type Err = InvalidSecret;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::new(value)
    }
}

impl TryFrom<String> for Secret {
    type Error = InvalidSecret;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for Secret {
    type Error = InvalidSecret;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

/// Deserializes from a string. The deserializer's own buffers may keep a copy of the value;
/// only the copy this type owns is zeroed.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Zeroizing::new(String::deserialize(deserializer)?);
        Self::new(value.as_str()).map_err(de::Error::custom)
    }
}

/// One or more accepted secrets; a token is valid if it matches any of them.
///
/// Every secret is compared on every request, so the time taken does not reveal which one
/// matched (see the [module docs](self)). Deserializes from a single string or a non-empty list
/// of strings.
///
/// ```
/// use polytomic_webhook_auth::{InvalidSecret, Secret, SecretSet};
///
/// // Rotation: the old and the new secret are both accepted until the old one is removed.
/// let secrets = SecretSet::new(Secret::new("old-secret")?).with(Secret::new("new-secret")?);
/// assert!(secrets.matches("old-secret"));
/// assert!(secrets.matches("new-secret"));
/// assert!(!secrets.matches("other"));
/// assert_eq!(secrets.len(), 2);
///
/// let from_strings = SecretSet::try_from_iter(["a", "b"])?;
/// assert!(from_strings.matches("b"));
/// assert_eq!(SecretSet::try_from_iter(Vec::<String>::new()).unwrap_err(), InvalidSecret::NoSecrets);
/// # Ok::<(), InvalidSecret>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSet {
    // Never empty.
    secrets: Vec<Secret>,
}

impl SecretSet {
    /// A set holding one secret.
    pub fn new(secret: Secret) -> Self {
        Self {
            secrets: vec![secret],
        }
    }

    /// Adds another accepted secret.
    #[must_use]
    pub fn with(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Builds a set from string values, refusing an invalid value or an empty list.
    pub fn try_from_iter<I>(values: I) -> Result<Self, InvalidSecret>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let secrets = values
            .into_iter()
            .map(Secret::new)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_secrets(secrets)
    }

    fn from_secrets(secrets: Vec<Secret>) -> Result<Self, InvalidSecret> {
        if secrets.is_empty() {
            Err(InvalidSecret::NoSecrets)
        } else {
            Ok(Self { secrets })
        }
    }

    /// How many secrets are accepted.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Always `false`: a set holds at least one secret.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Whether `token` equals any of the secrets.
    ///
    /// Every secret is compared and the results are combined without branching, so the time
    /// taken depends only on the number of secrets and the length of `token`.
    pub fn matches(&self, token: impl AsRef<[u8]>) -> bool {
        let presented = sha256(token.as_ref());
        let mut matched = Choice::from(0);
        for secret in &self.secrets {
            // `|` on `Choice`, not `||`: no secret is skipped once one has matched.
            matched |= secret.matches_digest(&presented);
        }
        matched.into()
    }
}

impl From<Secret> for SecretSet {
    fn from(secret: Secret) -> Self {
        Self::new(secret)
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSet")
            .field("len", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl<'de> Deserialize<'de> for SecretSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretSetVisitor;

        impl<'de> Visitor<'de> for SecretSetVisitor {
            type Value = SecretSet;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret string or a non-empty list of secret strings")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<SecretSet, E> {
                Secret::new(value).map(SecretSet::new).map_err(E::custom)
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<SecretSet, E> {
                Secret::new(value).map(SecretSet::new).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SecretSet, A::Error> {
                // The capacity hint is not trusted: it could be anything in a hostile file.
                let mut secrets = Vec::new();
                while let Some(secret) = seq.next_element::<Secret>()? {
                    secrets.push(secret);
                }
                SecretSet::from_secrets(secrets).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_any(SecretSetVisitor)
    }
}

/// Why a secret or a set of secrets was refused at construction.
///
/// Never contains any part of the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidSecret {
    /// The value is empty or only whitespace.
    Empty,
    /// The value contains a character (a control character, or non-ASCII) that no
    /// `Authorization` header accepted by this crate can carry, so it could never match.
    InvalidCharacter,
    /// No secret was given.
    NoSecrets,
}

impl fmt::Display for InvalidSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "the secret is empty or only whitespace",
            Self::InvalidCharacter => {
                "the secret contains a character other than visible ASCII, space or tab"
            }
            Self::NoSecrets => "at least one secret is required",
        })
    }
}

impl std::error::Error for InvalidSecret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_and_whitespace_only() {
        assert_eq!(Secret::new(""), Err(InvalidSecret::Empty));
        assert_eq!(Secret::new(" \t "), Err(InvalidSecret::Empty));
    }

    #[test]
    fn refuses_characters_no_header_can_carry() {
        assert_eq!(
            Secret::new("abc\ndef"),
            Err(InvalidSecret::InvalidCharacter)
        );
        assert_eq!(
            Secret::new("caf\u{e9}"),
            Err(InvalidSecret::InvalidCharacter)
        );
        assert_eq!(Secret::new("a\0"), Err(InvalidSecret::InvalidCharacter));
    }

    #[test]
    fn trims_surrounding_whitespace_like_the_token() {
        let secret = Secret::new("  value\t").unwrap();
        assert!(secret.matches("value"));
        assert!(!secret.matches("  value\t"));
    }

    #[test]
    fn matches_only_the_exact_value() {
        let secret = Secret::new("abcdef").unwrap();
        assert!(secret.matches("abcdef"));
        assert!(!secret.matches("abcde"));
        assert!(!secret.matches("abcdefg"));
        assert!(!secret.matches("ABCDEF"));
        assert!(!secret.matches(""));
    }

    #[test]
    fn rotation_accepts_each_configured_secret_and_nothing_else() {
        let set = SecretSet::try_from_iter(["first", "second"]).unwrap();
        assert!(set.matches("first"));
        assert!(set.matches("second"));
        assert!(!set.matches("third"));
        assert!(!set.is_empty());
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let secret = Secret::new("hunter2-secret").unwrap();
        let set = SecretSet::new(secret.clone()).with(Secret::new("other-secret").unwrap());
        for text in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{secret:#?}"),
            format!("{set:?}"),
            format!("{set:#?}"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("other-secret"), "{text}");
        }
        for error in [
            InvalidSecret::Empty,
            InvalidSecret::InvalidCharacter,
            InvalidSecret::NoSecrets,
        ] {
            assert!(!format!("{error:?} {error}").contains("hunter2"));
        }
    }

    #[test]
    fn deserializes_a_string_or_a_list() {
        let one: SecretSet = serde_json::from_str(r#""solo""#).unwrap();
        assert!(one.matches("solo"));
        let two: SecretSet = serde_json::from_str(r#"["a", "b"]"#).unwrap();
        assert!(two.matches("a") && two.matches("b") && two.len() == 2);
    }

    #[test]
    fn deserialization_refuses_bad_values_without_echoing_them() {
        let error = serde_json::from_str::<SecretSet>("[]").unwrap_err();
        assert!(error.to_string().contains("at least one secret"));
        let error = serde_json::from_str::<SecretSet>(r#"["ok", "bad\u0001value"]"#).unwrap_err();
        assert!(!error.to_string().contains("bad"), "{error}");
        let error = serde_json::from_str::<Secret>(r#""  ""#).unwrap_err();
        assert!(error.to_string().contains("empty"));
    }
}
