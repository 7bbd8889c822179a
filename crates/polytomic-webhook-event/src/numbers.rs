//! Numbers a built record would change: refused rather than rounded.
//!
//! serde_json reads a number with a fraction or exponent, or an integer beyond 64 bits, as an
//! `f64`. `18446744073709551616` would become `1.8446744073709552e19` and
//! `0.1000000000000000055511151231257827` would become `0.1`, silently. [`RawFields`] keeps the
//! text and has no such problem; for record types that build numbers ([`Fields`], your own
//! types), a batch whose fields hold a number that an `f64` does not give back exactly is
//! refused with 422 `inexact_number`. A number beyond an `f64`'s range (`1e400`) is not
//! rounded but refused by serde_json itself, as if it were malformed; the slow path then runs
//! the pass that checks numbers, which locates it like any other inexact number.
//!
//! Checking costs nothing on most batches. While records are built, the heap budget's adapter
//! notes whether any float was made at all. Only then is the body scanned, cheaply, for text that
//! could be such a number: a run of 16 or more digits (an `f64` keeps every decimal of up to 15
//! significant digits), or, when a float came out as zero or subnormal, an exponent of three
//! digits. Only a body with such text is parsed a second time, with each record's fields checked
//! number by number.
//!
//! [`RawFields`]: crate::RawFields
//! [`Fields`]: crate::Fields

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserializer as _;

use crate::raw::members;

/// Whether `text` holds text that reads as a number an `f64` changes: looked for only around a
/// run of 16 or more digits (an `f64` keeps every decimal of up to 15 significant digits), or,
/// when `tiny` (a float came out as zero or subnormal), around an exponent of three digits. The
/// text found there may sit inside a string: this only decides whether the exact check runs.
pub(crate) fn may_hold_inexact(text: &str, tiny: bool) -> bool {
    let body = text.as_bytes();
    // Tokens are cut at ASCII bytes, so at character boundaries: slicing the text needs no
    // second UTF-8 check.
    let inexact = |token: Range<usize>| text.get(token).is_some_and(reads_inexact);
    long_digit_runs(body).any(inexact) || (tiny && long_exponents(body).any(inexact))
}

const RUN: usize = 16;

fn is_digit_or_dot(byte: u8) -> bool {
    byte.is_ascii_digit() || byte == b'.'
}

fn is_number_byte(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
}

/// Where the whole number-like token around `at` lies.
fn token_around(body: &[u8], at: usize) -> Range<usize> {
    let start = body[..at]
        .iter()
        .rposition(|&byte| !is_number_byte(byte))
        .map_or(0, |before| before + 1);
    let end = body[at..]
        .iter()
        .position(|&byte| !is_number_byte(byte))
        .map_or(body.len(), |after| at + after);
    start..end
}

/// Whether `token` is a number whose value an `f64` changes.
fn reads_inexact(token: &str) -> bool {
    token.starts_with(|c: char| c == '-' || c.is_ascii_digit()) && exactness(token) == Some(false)
}

/// The tokens around every run of [`RUN`] or more digits. Such a run covers every residue modulo
/// [`RUN`] once, so looking at one byte in [`RUN`] finds them all; only around those is the run
/// measured.
fn long_digit_runs(body: &[u8]) -> impl Iterator<Item = Range<usize>> {
    let mut at = RUN - 1;
    std::iter::from_fn(move || {
        while at < body.len() {
            if !is_digit_or_dot(body[at]) {
                at += RUN;
                continue;
            }
            let start = body[..at]
                .iter()
                .rposition(|&byte| !is_digit_or_dot(byte))
                .map_or(0, |before| before + 1);
            let end = body[at..]
                .iter()
                .position(|&byte| !is_digit_or_dot(byte))
                .map_or(body.len(), |after| at + after);
            let found = at;
            at = end + RUN;
            if body[start..end]
                .iter()
                .filter(|b| b.is_ascii_digit())
                .count()
                >= RUN
            {
                return Some(token_around(body, found));
            }
        }
        None
    })
}

/// The tokens around every `e` or `E` after a digit and before an optional sign and three digits.
fn long_exponents(body: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    (1..body.len()).filter_map(move |at| {
        let rest = &body[at + 1..];
        let digits = match rest.first() {
            Some(b'-' | b'+') => &rest[1..],
            _ => rest,
        };
        (matches!(body[at], b'e' | b'E')
            && body[at - 1].is_ascii_digit()
            && digits.len() >= 3
            && digits[..3].iter().all(u8::is_ascii_digit))
        .then(|| token_around(body, at))
    })
}

/// The name of the first top-level member of the object `text` whose value holds a number an
/// `f64` would change; `None` when there is none (or `text` is not an object).
pub(crate) fn inexact_member(text: &str) -> Option<Cow<'_, str>> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let _ = deserializer.deserialize_map(members(|name, value| {
        if found.is_none() && holds_inexact(value.get()) {
            found = Some(name);
        }
    }));
    found
}

/// Whether the JSON value `text` holds, anywhere outside its strings, a number an `f64` changes.
fn holds_inexact(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let end = bytes[at..]
                    .iter()
                    .position(|&b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .map_or(bytes.len(), |len| at + len);
                if !is_exact(&text[at..end]) {
                    return true;
                }
                at = end;
            }
            _ => at += 1,
        }
    }
    false
}

/// Whether serde_json reads the number `text` without changing its value: an integer it keeps
/// as one, or a decimal whose `f64` prints back as the same decimal value.
pub(crate) fn is_exact(text: &str) -> bool {
    exactness(text).unwrap_or(false)
}

/// [`is_exact`], or `None` when `text` is not a number at all.
fn exactness(text: &str) -> Option<bool> {
    let integer = !text.contains(['.', 'e', 'E']);
    if integer && (text.parse::<u64>().is_ok() || text.parse::<i64>().is_ok()) {
        return Some(true);
    }
    let value = text.parse::<f64>().ok()?;
    Some(float_is_exact(text, value))
}

fn float_is_exact(text: &str, value: f64) -> bool {
    if !value.is_finite() {
        return false;
    }
    // ryu (serde_json's own float writer) prints the shortest decimal that reads back as the
    // same `f64`: what a re-serialized record would carry, and what senders write. The same
    // text is the same value, which settles most long numbers at once.
    let mut shortest = ryu::Buffer::new();
    let printed = shortest.format_finite(value);
    if printed == text {
        return true;
    }
    // More significant digits than the shortest text of any `f64` has (17): changed.
    let Some(written) = Decimal::of(text) else {
        return false;
    };
    if value == 0.0 {
        return written.len == 0;
    }
    // Up to 15 significant digits always come back unchanged from a normal `f64`.
    if written.len <= 15 && value.is_normal() {
        return true;
    }
    // Otherwise compare values: the same digits at the same place (`1.50` is `1.5`).
    Decimal::of(printed).is_some_and(|printed| printed == written)
}

/// A decimal's value as its sign, significant digits (at most 17) and the exponent of the first
/// digit, for comparing two spellings of a number without allocating.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: [u8; 17],
    len: usize,
    exponent: i64,
}

impl Decimal {
    /// `None` when `text` has more than 17 significant digits. One pass over the bytes.
    fn of(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let negative = bytes.first() == Some(&b'-');
        let mut decimal = Self {
            negative: false,
            digits: [0; 17],
            len: 0,
            exponent: 0,
        };
        let mut in_fraction = false;
        let mut started = false;
        // Zeros after the first significant digit, kept until a later digit shows they count.
        let mut zeros = 0_usize;
        let mut point = 0_i64;
        let mut at = usize::from(negative);
        while let Some(&byte) = bytes.get(at) {
            at += 1;
            match byte {
                b'.' => in_fraction = true,
                b'e' | b'E' => {
                    let exponent = text[at..].parse::<i64>().ok()?;
                    point = point.saturating_add(exponent);
                    break;
                }
                b'0' if !started => {
                    if in_fraction {
                        point -= 1;
                    }
                }
                b'0'..=b'9' => {
                    started = true;
                    if !in_fraction {
                        point += 1;
                    }
                    if byte == b'0' {
                        zeros += 1;
                        continue;
                    }
                    for digit in std::iter::repeat_n(b'0', zeros).chain(std::iter::once(byte)) {
                        *decimal.digits.get_mut(decimal.len)? = digit;
                        decimal.len += 1;
                    }
                    zeros = 0;
                }
                _ => return None,
            }
        }
        if decimal.len > 0 {
            decimal.negative = negative;
            decimal.exponent = point;
        }
        Some(decimal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactness() {
        for exact in [
            "0",
            "-0",
            "1",
            "1.0",
            "1.50",
            "0.1",
            "1e2",
            "100",
            "1.8446744073709552e19",
            "18446744073709551615",
            "-9223372036854775808",
            "2.5e-3",
            "0.000001",
            "123456789012345",
            // Seventeen digits: as the shortest writer prints them, and with a zero more.
            "0.5488135039273248",
            "0.54881350392732480",
        ] {
            assert!(is_exact(exact), "{exact}");
        }
        for inexact in [
            "18446744073709551616",
            "123456789012345678901234567890123456789",
            "0.1000000000000000055511151231257827",
            "-9223372036854775809",
            "1e-400",
            "1e400",
            "1234567890123456789.5",
        ] {
            assert!(!is_exact(inexact), "{inexact}");
        }
    }

    fn long_digit_run(body: &[u8]) -> bool {
        long_digit_runs(body).next().is_some()
    }

    fn long_exponent(body: &[u8]) -> bool {
        long_exponents(body).next().is_some()
    }

    #[test]
    fn only_inexact_numbers_call_for_the_exact_check() {
        assert!(may_hold_inexact(r#"{"a":18446744073709551616}"#, false));
        assert!(may_hold_inexact(
            r#"[0.1000000000000000055511151231257827]"#,
            false
        ));
        // Shortest float text, as any serializer writes it: exact.
        assert!(!may_hold_inexact(
            r#"{"score":0.5488135039273248,"b":1}"#,
            false
        ));
        // A long run of digits inside a date-like string is no number.
        assert!(!may_hold_inexact(
            r#"{"id":"1234567890123456789-1"}"#,
            false
        ));
        assert!(may_hold_inexact("[1e-400]", true));
        assert!(!may_hold_inexact("[1e-400]", false));
        assert!(!may_hold_inexact("[0.0, 1e-300]", true));
    }

    #[test]
    fn candidates_are_found_wherever_they_sit() {
        for offset in 0..40 {
            let body = format!(
                "{}123456789.1234567{}",
                " ".repeat(offset),
                " ".repeat(offset)
            );
            assert!(long_digit_run(body.as_bytes()), "{offset}");
            let body = format!(
                "{}123456789.1234567{}",
                " ".repeat(offset),
                " ".repeat(offset)
            );
            assert!(long_digit_run(body.as_bytes()), "{offset}");
            let short = format!(
                "{}123456789012345{}",
                " ".repeat(offset),
                " ".repeat(offset)
            );
            assert!(!long_digit_run(short.as_bytes()), "{offset}");
        }
        assert!(long_exponent(b"[1e-400]"));
        assert!(long_exponent(b"[1E400]"));
        assert!(!long_exponent(b"[1e-40, 2e99]"));
    }

    #[test]
    fn members_are_named_and_strings_skipped() {
        assert_eq!(
            inexact_member(r#"{"a":"18446744073709551616","b":[1,{"c":18446744073709551616}]}"#)
                .as_deref(),
            Some("b")
        );
        assert_eq!(
            inexact_member(r#"{"a":"x\"18446744073709551616","b":1.5}"#),
            None
        );
    }
}
