//! A batch's row: the records it stored, as one JSON array.
//!
//! Each stored record is `[KEY, HASH, FIELDS]`: the key field's JSON text (`null` for a hash
//! identity), the hash as a JSON string, and the fields exactly as received. One row per batch
//! is what makes storing cheap (one insert, whatever the batch's size), and JSON keeps the file
//! readable with SQLite's own `json_each`.

use polytomic_webhook_event::Record;
use serde::Deserialize;
use serde_json::value::RawValue;

/// One stored record of a row, borrowed from the row's text.
#[derive(Debug, Deserialize)]
pub(super) struct RowRecord<'a>(
    #[serde(borrow)] pub(super) Option<&'a RawValue>,
    pub(super) String,
    #[serde(borrow)] pub(super) &'a RawValue,
);

impl<'a> RowRecord<'a> {
    /// The key field's JSON text, or `None` for a hash identity.
    pub(super) fn key(&self) -> Option<&'a str> {
        self.0.map(RawValue::get)
    }

    pub(super) fn hash(&self) -> &str {
        &self.1
    }

    pub(super) fn fields(&self) -> &'a str {
        self.2.get()
    }
}

/// The row text for `records`, each with its key (from [`crate::Identity::key`]).
pub(super) fn encode(records: &[(Option<&str>, &Record)]) -> String {
    let capacity = records
        .iter()
        .map(|(key, record)| {
            key.map_or(4, str::len)
                + record.hash().as_str().len()
                + record.fields().as_str().len()
                + 8
        })
        .sum::<usize>()
        + 2;
    let mut text = String::with_capacity(capacity);
    text.push('[');
    for (index, (key, record)) in records.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push('[');
        text.push_str(key.unwrap_or("null"));
        text.push(',');
        push_json_string(&mut text, record.hash().as_str());
        text.push(',');
        text.push_str(record.fields().as_str());
        text.push(']');
    }
    text.push(']');
    text
}

/// The records of a row's text, in the order they were stored.
pub(super) fn decode(text: &str) -> serde_json::Result<Vec<RowRecord<'_>>> {
    serde_json::from_str(text)
}

/// Appends `value` as a JSON string (quotes, and escapes where JSON needs them).
fn push_json_string(text: &mut String, value: &str) {
    // A hash is almost always plain ASCII, which needs no escape: copy it as it is.
    if value
        .bytes()
        .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\')
    {
        text.push('"');
        text.push_str(value);
        text.push('"');
    } else {
        // serde_json's own escaping, for the rare hash that needs it.
        text.push_str(&serde_json::Value::from(value).to_string());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use polytomic_webhook_event::RecordHash;

    use super::*;

    #[test]
    fn a_row_gives_back_each_key_hash_and_fields_exactly() {
        let fields = r#"{ "id" : 1.50, "big": 123456789012345678901234567890, "s": "é\n" }"#;
        let odd_hash = "quote \" backslash \\ tab \t end";
        let first = Record::new(RecordHash::new("h1"), fields.parse().unwrap());
        let second = Record::new(RecordHash::new(odd_hash), r#"{"x":null}"#.parse().unwrap());
        let text = encode(&[(Some(r#""k""#), &first), (None, &second)]);
        let records = decode(&text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key(), Some(r#""k""#));
        assert_eq!(records[0].hash(), "h1");
        assert_eq!(records[0].fields(), fields);
        assert_eq!(records[1].key(), None);
        assert_eq!(records[1].hash(), odd_hash);
        assert_eq!(records[1].fields(), r#"{"x":null}"#);
    }
}
