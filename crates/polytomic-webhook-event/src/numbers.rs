//! Numbers a built record would change: refused rather than rounded.
//!
//! serde_json reads a number with a fraction or exponent, or an integer beyond 64 bits, as an
//! `f64`. `18446744073709551616` would become `1.8446744073709552e19` and
//! `0.1000000000000000055511151231257827` would become `0.1`, silently. [`RawFields`] keeps the
//! text and has no such problem; for record types that build numbers ([`Fields`], your own
//! types), a batch whose fields hold a number that an `f64` does not give back exactly is
//! refused with 422 `inexact_number`.
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

use serde::Deserializer as _;

use crate::raw::members;

/// Whether `body` has text that could be a number an `f64` changes: a run of 16 or more digits
/// (dots included), or, when `tiny` (a float came out as zero or subnormal), an exponent of
/// three or more digits.
pub(crate) fn may_hold_inexact(body: &[u8], tiny: bool) -> bool {
    long_digit_run(body) || (tiny && long_exponent(body))
}

const RUN: usize = 16;

fn is_digit_or_dot(byte: u8) -> bool {
    byte.is_ascii_digit() || byte == b'.'
}

/// A run of [`RUN`] digits or dots covers every residue modulo [`RUN`] once, so looking at one
/// byte in [`RUN`] finds every candidate; only around those is the run measured.
fn long_digit_run(body: &[u8]) -> bool {
    let mut at = RUN - 1;
    while at < body.len() {
        if is_digit_or_dot(body[at]) {
            let start = body[..at]
                .iter()
                .rposition(|&byte| !is_digit_or_dot(byte))
                .map_or(0, |before| before + 1);
            let end = body[at..]
                .iter()
                .position(|&byte| !is_digit_or_dot(byte))
                .map_or(body.len(), |after| at + after);
            let digits = body[start..end]
                .iter()
                .filter(|b| b.is_ascii_digit())
                .count();
            if digits >= RUN {
                return true;
            }
            at = end + RUN;
        } else {
            at += RUN;
        }
    }
    false
}

/// `e` or `E` after a digit, then an optional sign and three digits.
fn long_exponent(body: &[u8]) -> bool {
    (1..body.len()).any(|at| {
        matches!(body[at], b'e' | b'E') && body[at - 1].is_ascii_digit() && {
            let rest = &body[at + 1..];
            let digits = match rest.first() {
                Some(b'-' | b'+') => &rest[1..],
                _ => rest,
            };
            digits.len() >= 3 && digits[..3].iter().all(u8::is_ascii_digit)
        }
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
    let integer = !text.contains(['.', 'e', 'E']);
    if integer && (text.parse::<u64>().is_ok() || text.parse::<i64>().is_ok()) {
        return true;
    }
    match text.parse::<f64>() {
        // Rust prints the shortest decimal that reads back as the same `f64`.
        Ok(value) if value.is_finite() => decimal(text) == decimal(&format!("{value:e}")),
        _ => false,
    }
}

/// A decimal's value as (negative, significant digits, exponent of the first digit), for
/// comparing two spellings of a number.
fn decimal(text: &str) -> (bool, String, i64) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = whole.chars().chain(fraction.chars()).collect();
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    let point =
        i64::try_from(whole.len()).unwrap_or(i64::MAX) - i64::try_from(leading).unwrap_or(0);
    (
        negative,
        significant.to_owned(),
        point.saturating_add(exponent),
    )
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
