//! Reading records: JSON Lines or CSV, each record's fields as a JSON object, kept as its text
//! so that every number is sent as written.

use std::collections::HashSet;
use std::io::{self, BufRead};
use std::path::Path;

use clap::ValueEnum;
use polytomic_webhook::prelude::RawFields;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The record formats `send` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// CSV for a `.csv` file, JSON Lines otherwise (and for standard input).
    Auto,
    /// One JSON object of fields per line; blank lines are skipped.
    Jsonl,
    /// A header row of field names, then one record per row; every value is a string.
    Csv,
}

impl Format {
    pub(crate) fn resolve(self, path: Option<&Path>) -> Self {
        match self {
            Self::Auto => match path.and_then(Path::extension) {
                Some(extension) if extension.eq_ignore_ascii_case("csv") => Self::Csv,
                _ => Self::Jsonl,
            },
            other => other,
        }
    }
}

/// An input line that is not a record.
#[derive(Debug)]
pub(crate) struct BadLine {
    pub(crate) line: u64,
    pub(crate) message: String,
}

/// The records read, and the lines that were not records.
#[derive(Debug, Default)]
pub(crate) struct Input {
    pub(crate) records: Vec<RawFields>,
    pub(crate) bad: Vec<BadLine>,
}

/// Reads every record; an error only when the input itself cannot be read.
pub(crate) fn read(reader: impl BufRead, format: Format) -> io::Result<Input> {
    match format {
        Format::Csv => read_csv(reader),
        Format::Auto | Format::Jsonl => read_jsonl(reader),
    }
}

fn read_jsonl(mut reader: impl BufRead) -> io::Result<Input> {
    let mut input = Input::default();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(input);
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match jsonl_record(&line) {
            Ok(fields) => input.records.push(fields),
            Err(message) => input.bad.push(BadLine {
                line: number,
                message,
            }),
        }
    }
}

/// One line's fields, kept as their text (no number goes through a float), or why the line is
/// not a record. A name given twice is refused, as the receiving side refuses it: a map would
/// keep only one of the values.
fn jsonl_record(line: &[u8]) -> Result<RawFields, String> {
    let raw: &RawValue =
        serde_json::from_slice(line).map_err(|error| format!("invalid JSON: {error}"))?;
    let kind = match raw.get().as_bytes().first() {
        Some(b'{') => return raw.get().parse().map_err(|error| format!("{error}")),
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    Err(format!("expected a JSON object of fields, found {kind}"))
}

fn read_csv(reader: impl BufRead) -> io::Result<Input> {
    let mut input = Input::default();
    let mut csv = csv::ReaderBuilder::new().from_reader(reader);
    let names = match csv.headers() {
        Ok(names) => names.clone(),
        Err(error) => {
            input.bad.push(bad_csv(&error, 1)?);
            return Ok(input);
        }
    };
    if names.is_empty() {
        return Ok(input);
    }
    // A JSON object keeps one value per name, so a second column of the same name would
    // silently replace the first in every record.
    if let Some(name) = first_duplicate(&names) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the header row names the column `{name}` more than once"),
        ));
    }
    for row in csv.records() {
        match row {
            Ok(row) => {
                let fields: Map<String, Value> = names
                    .iter()
                    .zip(&row)
                    .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
                    .collect();
                input.records.push(RawFields::from(fields));
            }
            Err(error) => input.bad.push(bad_csv(&error, 0)?),
        }
    }
    Ok(input)
}

fn first_duplicate(names: &csv::StringRecord) -> Option<&str> {
    let mut seen = HashSet::new();
    names.iter().find(|name| !seen.insert(*name))
}

/// A CSV error as a bad line, or as an I/O error when the input could not be read at all.
fn bad_csv(error: &csv::Error, fallback_line: u64) -> io::Result<BadLine> {
    if let csv::ErrorKind::Io(io_error) = error.kind() {
        return Err(io::Error::new(io_error.kind(), io_error.to_string()));
    }
    let line = error.position().map_or(fallback_line, csv::Position::line);
    let message = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields as in the header row, found {len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        _ => error.to_string(),
    };
    Ok(BadLine { line, message })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn jsonl_numbers_lines_from_one_and_skips_blank_ones() {
        let input = read(
            &b"{\"a\":1}\n\n[1]\n{\"a\":\n{\"b\":2}\r\n"[..],
            Format::Jsonl,
        )
        .unwrap();
        assert_eq!(input.records.len(), 2);
        assert_eq!(input.records[1].get("b").unwrap().get(), "2");
        let lines: Vec<_> = input.bad.iter().map(|bad| bad.line).collect();
        assert_eq!(lines, [3, 4]);
        assert!(input.bad[0].message.contains("an array"));
    }

    #[test]
    fn csv_reports_rows_by_line_and_keeps_strings() {
        let input = read(
            &b"id,email\n1,a@example.com\n2\n3,c@example.com\n"[..],
            Format::Csv,
        )
        .unwrap();
        assert_eq!(input.records.len(), 2);
        assert_eq!(input.records[0].get("id").unwrap().get(), r#""1""#);
        assert_eq!(input.bad[0].line, 3);
        assert!(
            input.bad[0].message.contains("expected 2 fields"),
            "{:?}",
            input.bad
        );
    }

    #[test]
    fn csv_header_with_a_repeated_name_is_refused_naming_it() {
        let error = read(
            &b"id,email,name,email\n1,a@example.com,Ada,b@example.com\n"[..],
            Format::Csv,
        )
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("`email`"), "{error}");
    }

    #[test]
    fn auto_picks_csv_by_extension() {
        assert_eq!(Format::Auto.resolve(Some(Path::new("a.CSV"))), Format::Csv);
        assert_eq!(
            Format::Auto.resolve(Some(Path::new("a.jsonl"))),
            Format::Jsonl
        );
        assert_eq!(Format::Auto.resolve(None), Format::Jsonl);
    }
}
