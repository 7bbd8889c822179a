//! Polytomic's field-name normalisation, applied on the receiving side.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value};

/// Normalises a field name the way Polytomic does: every character that is not an ASCII letter
/// or digit, `_`, `-` or `.` is removed (`$first_name` becomes `first_name`).
///
/// Only ASCII letters and digits are kept. Applied to a name Polytomic already normalised, this
/// is the identity whichever way Polytomic reads "alphanumeric", so handlers see the same names
/// whether or not the sync has normalisation turned on.
///
/// ```
/// use polytomic_webhook_event::normalize_field_name;
///
/// assert_eq!(normalize_field_name("$first_name"), "first_name");
/// assert_eq!(normalize_field_name("user.e-mail"), "user.e-mail");
/// assert_eq!(normalize_field_name("Last Login (UTC)"), "LastLoginUTC");
/// ```
pub fn normalize_field_name(name: &str) -> Cow<'_, str> {
    if name.chars().all(is_kept) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.chars().filter(|&c| is_kept(c)).collect())
    }
}

fn is_kept(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Two field names of one record that normalise to the same name.
#[derive(Debug)]
pub(crate) struct Collision {
    pub(crate) first: String,
    pub(crate) second: String,
    pub(crate) normalized: String,
}

/// Normalises every key of a record's fields, refusing to silently merge two fields.
pub(crate) fn normalize_fields(
    fields: Map<String, Value>,
) -> Result<Map<String, Value>, Collision> {
    if fields.keys().all(|key| key.chars().all(is_kept)) {
        return Ok(fields);
    }
    let mut normalized = Map::new();
    // Original names of the keys that changed; an unchanged key is its own original.
    let mut renamed: HashMap<String, String> = HashMap::new();
    for (key, value) in fields {
        let name = normalize_field_name(&key).into_owned();
        if normalized.contains_key(&name) {
            let first = renamed.remove(&name).unwrap_or_else(|| name.clone());
            return Err(Collision {
                first,
                second: key,
                normalized: name,
            });
        }
        if name != key {
            renamed.insert(name.clone(), key);
        }
        normalized.insert(name, value);
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn strips_disallowed_characters_from_keys() {
        let fields = normalize_fields(object(json!({"$first_name": "Ada", "age": 3}))).unwrap();
        assert_eq!(
            Value::Object(fields),
            json!({"first_name": "Ada", "age": 3})
        );
    }

    #[test]
    fn non_ascii_letters_are_removed() {
        assert_eq!(normalize_field_name("café"), "caf");
    }

    #[test]
    fn collision_names_both_originals() {
        let error =
            normalize_fields(object(json!({"$first_name": 1, "first_name": 2}))).unwrap_err();
        let mut originals = [error.first, error.second];
        originals.sort();
        assert_eq!(originals, ["$first_name", "first_name"]);
        assert_eq!(error.normalized, "first_name");

        let error = normalize_fields(object(json!({"#a": 1, "$a": 2}))).unwrap_err();
        let mut originals = [error.first, error.second];
        originals.sort();
        assert_eq!(originals, ["#a", "$a"]);
    }
}
