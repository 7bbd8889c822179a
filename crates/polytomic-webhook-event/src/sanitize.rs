//! serde's error messages without the values they quote.
//!
//! serde describes a type mismatch with the offending value (`invalid type: string
//! "SSN-078-05-1120", expected a JSON object`). Problem bodies and logs must never carry record
//! contents, so every message that reaches a rejection passes through [`sanitize`]: the known
//! serde shapes keep the kind of value and what was expected, and any other message from a
//! type's own `Deserialize` impl, which could say anything, is replaced by a fixed sentence.

use std::fmt::Display;

/// The message, with every value removed.
pub(crate) fn sanitize(error: &impl Display) -> String {
    let text = strip_position(&error.to_string()).to_owned();
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return match split_unexpected(rest) {
                Some((kind, expected)) => format!("{prefix}{kind}, expected {expected}"),
                None => format!("{prefix}a value of the wrong kind"),
            };
        }
    }
    if text.starts_with("unknown variant `") {
        // The variant name is the sender's value; what follows is the type's list.
        return match text.rfind("`, expected ") {
            Some(at) => format!("unknown variant, expected {}", &text[at + 12..]),
            None => "unknown variant".to_owned(),
        };
    }
    if is_value_free(&text) {
        return text;
    }
    "the value does not fit the record type".to_owned()
}

/// serde_json appends ` at line L column C` to its messages; a JSON path replaces it.
pub(crate) fn strip_position(text: &str) -> &str {
    match text.rfind(" at line ") {
        Some(end) if text[end + 9..].contains(" column ") => &text[..end],
        _ => text,
    }
}

/// Messages that name only the type's own vocabulary (field names, counts, expectations) or
/// come from this crate and serde_json without values.
fn is_value_free(text: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "missing field `",
        "duplicate field `",
        "unknown field `",
        "invalid length ",
        "the member name is given twice: ",
        "the sync id must ",
        "the batch has more than ",
        "the field names `",
        "number out of range",
        "recursion limit exceeded",
        "objects and arrays are nested deeper",
        "invalid number",
        "expected `",
        "expected value",
        "expected ident",
        "unexpected end of hex escape",
        "float key must be finite",
        "trailing ",
        "EOF while parsing",
        "control character",
        "invalid escape",
        "invalid unicode code point",
        "lone leading surrogate",
        "key must be a string",
        "the heap budget",
    ];
    PREFIXES.iter().any(|prefix| text.starts_with(prefix))
}

/// Splits `<unexpected>, expected <what>` into the unexpected value's kind and `<what>`.
fn split_unexpected(rest: &str) -> Option<(&'static str, &str)> {
    // serde's `Unexpected` display forms, value-bearing ones first.
    const VALUED: &[(&str, &str)] = &[
        ("boolean `", "a boolean"),
        ("integer `", "an integer"),
        ("floating point `", "a number"),
        ("character `", "a character"),
    ];
    for (start, kind) in VALUED {
        if let Some(after) = rest.strip_prefix(start) {
            let end = after.find("`, expected ")?;
            return Some((kind, &after[end + 12..]));
        }
    }
    if let Some(after) = rest.strip_prefix("string \"") {
        // A Rust debug string: `\` escapes the next character, `"` ends it.
        let mut chars = after.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => return Some(("a string", after[at + 1..].strip_prefix(", expected ")?)),
                _ => {}
            }
        }
        return None;
    }
    const PLAIN: &[(&str, &str)] = &[
        ("a string", "a string"),
        ("a number", "a number"),
        ("a boolean", "a boolean"),
        ("an array", "an array"),
        ("byte array", "a byte array"),
        ("unit value", "null"),
        ("null", "null"),
        ("Option value", "an optional value"),
        ("newtype struct", "a value"),
        ("sequence", "an array"),
        ("map", "an object"),
        ("enum", "an enum"),
        ("unit variant", "a variant"),
        ("newtype variant", "a variant"),
        ("tuple variant", "a variant"),
        ("struct variant", "a variant"),
    ];
    PLAIN.iter().find_map(|(start, kind)| {
        rest.strip_prefix(start)?
            .strip_prefix(", expected ")
            .map(|expected| (*kind, expected))
    })
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn values_are_removed_from_type_errors() {
        let cases = [
            (
                r#"invalid type: string "SSN-078-05-1120", expected a JSON object"#,
                "invalid type: a string, expected a JSON object",
            ),
            (
                "invalid type: integer `9078051120`, expected a string",
                "invalid type: an integer, expected a string",
            ),
            (
                r#"invalid value: string "a\", expected x", expected a UUID"#,
                "invalid value: a string, expected a UUID",
            ),
            (
                "invalid type: map, expected a string at line 1 column 20",
                "invalid type: an object, expected a string",
            ),
            (
                "unknown variant `SECRET`, expected `a` or `b`",
                "unknown variant, expected `a` or `b`",
            ),
            ("missing field `email`", "missing field `email`"),
            (
                "premature end of input SECRET",
                "the value does not fit the record type",
            ),
        ];
        for (raw, clean) in cases {
            assert_eq!(sanitize(&raw), clean, "{raw}");
        }
    }

    #[test]
    fn a_value_mimicking_the_suffix_does_not_leak() {
        let raw = "invalid type: floating point `1.5`, expected f32 SECRET";
        assert!(!sanitize(&raw).contains("1.5"));
        let raw = r#"invalid type: string "SECRET\"", expected a string"#;
        assert!(!sanitize(&raw).contains("SECRET"));
    }
}
