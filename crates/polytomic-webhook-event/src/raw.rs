//! JSON kept as its text: [`RawJson`] for any value, [`RawFields`] for a record's `fields`.
//!
//! Building a `serde_json::Value` tree costs far more heap and time than the text it comes from
//! (a hostile `[{"":0},{"":0},…]` costs about a hundred times its bytes). Keeping the validated
//! text instead costs one `Bytes` handle per value: while [`parse`](crate::parse) runs, the
//! body's buffer is registered here, and every raw value cut from it shares that buffer.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use bytestring::ByteString;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::sanitize::sanitize;

thread_local! {
    /// The body being parsed on this thread, if any.
    static SOURCE: RefCell<Option<ByteString>> = const { RefCell::new(None) };
}

/// Registers the body a parse reads, so raw values cut from it share its buffer; restores the
/// previous registration (parses do not nest in practice, but a handler could call one from a
/// `Deserialize` impl) when dropped.
pub(crate) struct SourceGuard {
    previous: Option<ByteString>,
}

impl SourceGuard {
    pub(crate) fn enter(source: ByteString) -> Self {
        let previous = SOURCE.with_borrow_mut(|slot| slot.replace(source));
        Self { previous }
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SOURCE.with_borrow_mut(|slot| *slot = previous);
    }
}

/// The length of the body being parsed (0 outside a parse).
pub(crate) fn source_len() -> usize {
    SOURCE.with_borrow(|source| source.as_ref().map_or(0, |source| source.len()))
}

/// `text` as a `ByteString`: a view of the body being parsed when `text` lies inside it (no
/// allocation), a copy otherwise.
pub(crate) fn share(text: &str) -> ByteString {
    SOURCE.with_borrow(|source| match source {
        Some(source) if contains(source, text) => source.slice_ref(text),
        _ => ByteString::from(text),
    })
}

fn contains(outer: &str, inner: &str) -> bool {
    let start = outer.as_ptr() as usize;
    let inner_start = inner.as_ptr() as usize;
    inner_start >= start && inner_start + inner.len() <= start + outer.len()
}

/// Any JSON value kept as its text, exactly as received (numbers included).
///
/// The object of an event type this crate does not know arrives this way
/// ([`PolytomicEvent::Unknown`](crate::PolytomicEvent::Unknown)), so acknowledging it costs no
/// more than its bytes.
///
/// ```
/// use polytomic_webhook_event::RawJson;
///
/// let raw: RawJson = r#"{"amount": 0.1000000000000000055511151231257827}"#.parse().unwrap();
/// assert!(raw.as_str().contains("0.1000000000000000055511151231257827"));
/// let value: serde_json::Value = raw.deserialize_as().unwrap();
/// assert!(value["amount"].is_number());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawJson(ByteString);

impl RawJson {
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text as bytes (a view of the delivery's buffer, when it came from one).
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// The JSON text as bytes, to forward or store as is.
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// Deserializes the value into `T`.
    pub fn deserialize_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }
}

impl RawJson {
    pub(crate) fn from_raw(raw: &RawValue) -> Self {
        Self(share(raw.get()))
    }
}

impl FromStr for RawJson {
    type Err = serde_json::Error;

    /// Validates `text` as one JSON value.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(Self(ByteString::from(raw.get())))
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_text(self.as_str(), serializer)
    }
}

/// Writes valid JSON text as it is (into a JSON serializer; other formats get the value).
fn serialize_text<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    // Re-reading the text is a validation pass with no allocation; it yields the `RawValue`
    // that serde_json writes verbatim.
    let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
    raw.serialize(serializer)
}

impl<'de> Deserialize<'de> for RawJson {
    /// Needs borrowed JSON text (`serde_json::from_str` / `from_slice`), as `&RawValue` does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        Ok(Self(share(raw.get())))
    }
}

/// A record's `fields` kept as its validated JSON text: the default record type.
///
/// What the extractor checked: the text is a JSON object whose member names are all different.
/// Nothing else is built: no map, no strings, no numbers. The text is a view of the decoded
/// body's buffer (one reference-counted handle per record, no copy), and every number in it is
/// exactly as Polytomic sent it. Use it to:
///
/// - forward or store the record as is ([`as_str`](Self::as_str), [`as_bytes`](Self::as_bytes),
///   or serialize it: the text is written verbatim);
/// - read one field without building a map ([`get`](Self::get));
/// - deserialize into your own type when you need one ([`deserialize_as`](Self::deserialize_as)),
///   with an error that says where inside the fields it failed, and turns into the same 422
///   `invalid_record_fields` answer the extractor gives for a typed `SyncRecords<T>`.
///
/// A batch's `metadata` object is kept the same way.
///
/// ```
/// use polytomic_webhook_event::RawFields;
///
/// let fields: RawFields = r#"{"email":"ada@example.com","id":123456789012345678901234567890}"#
///     .parse()
///     .unwrap();
/// assert_eq!(fields.get("email").unwrap().get(), r#""ada@example.com""#);
/// assert_eq!(fields.get("id").unwrap().get(), "123456789012345678901234567890");
/// assert!(fields.get("phone").is_none());
///
/// #[derive(serde::Deserialize)]
/// struct Contact {
///     email: String,
/// }
/// let contact: Contact = fields.deserialize_as().unwrap();
/// assert_eq!(contact.email, "ada@example.com");
///
/// assert!(r#"{"a":1,"a":2}"#.parse::<RawFields>().is_err()); // a name given twice
/// assert!("[1]".parse::<RawFields>().is_err()); // not an object
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawFields(RawJson);

impl RawFields {
    /// The empty object `{}`.
    pub fn empty() -> Self {
        Self(RawJson(ByteString::from_static("{}")))
    }

    /// The object's JSON text, exactly as received.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The object's JSON text as bytes (a view of the delivery's buffer).
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// The object's JSON text as bytes, to forward or store as is.
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        // Valid object text: after `{` and any whitespace comes `}` or the first name.
        self.as_str()[1..].trim_start().starts_with('}')
    }

    /// The raw text of the member named `name`, found by scanning the object once; nothing is
    /// built or allocated unless a member name contains escapes.
    pub fn get(&self, name: &str) -> Option<&RawValue> {
        let mut found = None;
        let mut deserializer = serde_json::Deserializer::from_str(self.as_str());
        // The text was validated when this value was made, so the scan cannot fail.
        let _ = deserializer.deserialize_map(members(|member, value| {
            if found.is_none() && member == name {
                found = Some(value);
            }
        }));
        found
    }

    /// Deserializes the fields into `T`. The error names the path inside the fields where `T`
    /// gave up, and never a value.
    pub fn deserialize_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, FieldsError> {
        let mut deserializer = serde_json::Deserializer::from_str(self.as_str());
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            FieldsError {
                path: if path == "." { String::new() } else { path },
                message: sanitize(&error.into_inner()),
            }
        })
    }

    /// Validates `text` (an object, every name once) and keeps it.
    fn validate(text: ByteString) -> Result<Self, serde_json::Error> {
        check_object(&text).map_err(de::Error::custom)?;
        Ok(Self(RawJson(text)))
    }
}

impl Default for RawFields {
    fn default() -> Self {
        Self::empty()
    }
}

impl FromStr for RawFields {
    type Err = serde_json::Error;

    /// Validates `text` as one JSON object whose member names are all different.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Self::validate(ByteString::from(raw.get()))
    }
}

impl From<crate::Fields> for RawFields {
    /// The map's JSON text (a map's names are unique by construction).
    fn from(fields: crate::Fields) -> Self {
        let text = serde_json::Value::Object(fields).to_string();
        Self(RawJson(ByteString::from(text)))
    }
}

impl fmt::Debug for RawFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RawFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RawFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_text(self.as_str(), serializer)
    }
}

impl<'de> Deserialize<'de> for RawFields {
    /// Needs borrowed JSON text (`serde_json::from_str` / `from_slice`), as `&RawValue` does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde_json skims the value once (validating it); the names are then read off its
        // text, which costs far less than handing each member through serde.
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        check_object(raw.get()).map_err(de::Error::custom)?;
        Ok(Self(RawJson(share(raw.get()))))
    }
}

/// Why [`RawFields::deserialize_as`] failed: where inside the fields, and what was expected.
///
/// ```
/// use polytomic_webhook_event::RawFields;
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Contact {
///     #[allow(dead_code)]
///     email: String,
/// }
/// let fields: RawFields = r#"{"email": 42}"#.parse().unwrap();
/// let error = fields.deserialize_as::<Contact>().unwrap_err();
/// assert_eq!(error.path(), "email");
/// assert!(!error.to_string().contains("42")); // values never appear
/// let rejection = error.into_rejection(3);
/// assert_eq!(rejection.status(), 422);
/// assert_eq!(rejection.code(), "invalid_record_fields");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldsError {
    path: String,
    message: String,
}

impl FieldsError {
    /// The path inside the fields (`email`, `address.city`, `tags[2]`); empty for the object.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What was expected, without the value.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The 422 `invalid_record_fields` rejection for the record at `index` in its batch, located
    /// as the extractor would locate it (`object.records[3].fields.email`).
    pub fn into_rejection(self, index: usize) -> crate::EventRejection {
        let mut path = format!("object.records[{index}].fields");
        if !self.path.is_empty() {
            if !self.path.starts_with('[') {
                path.push('.');
            }
            path.push_str(&self.path);
        }
        crate::rejection::InvalidRecordFields::new(path, self.message).into()
    }
}

impl fmt::Display for FieldsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldsError {}

/// Checks that `text` (one valid JSON value) is an object whose member names are all different.
fn check_object(text: &str) -> Result<(), String> {
    let kind = match text.as_bytes().first() {
        Some(b'{') => None,
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        _ => Some("a number"),
    };
    if let Some(kind) = kind {
        return Err(format!("invalid type: {kind}, expected a JSON object"));
    }
    let mut names = Names::default();
    let mut duplicate = None;
    for_each_name(text, |name| {
        if duplicate.is_none() {
            duplicate = names.insert(name).err();
        }
    });
    match duplicate.or_else(|| names.finish().err()) {
        Some(name) => Err(DuplicateName(&name).to_string()),
        None => Ok(()),
    }
}

/// Calls `visit` with each top-level member name of `object`, the text of one valid JSON object,
/// decoded (borrowed unless it has escapes). A hand-written scan: the text was validated when
/// serde_json read it, so only strings, nesting and commas need telling apart.
fn for_each_name<'a>(object: &'a str, mut visit: impl FnMut(Cow<'a, str>)) {
    let bytes = object.as_bytes();
    let mut at = 1; // past the `{`
    let mut depth = 0_usize;
    let mut expect_name = true;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => {
                let (end, escaped) = string_end(bytes, at + 1);
                if depth == 0 && expect_name {
                    let quoted = &object[at..=end.min(object.len() - 1)];
                    visit(if escaped {
                        // Escapes are rare in names: serde_json decodes them.
                        Cow::Owned(serde_json::from_str(quoted).unwrap_or_default())
                    } else {
                        Cow::Borrowed(&object[at + 1..end])
                    });
                    expect_name = false;
                }
                at = end + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                at += 1;
            }
            b'}' | b']' => {
                if depth == 0 {
                    return;
                }
                depth -= 1;
                at += 1;
            }
            b',' => {
                expect_name |= depth == 0;
                at += 1;
            }
            _ => at += 1,
        }
    }
}

/// The index of the quote that closes the string whose text starts at `at`, and whether the
/// string has escapes.
fn string_end(bytes: &[u8], mut at: usize) -> (usize, bool) {
    // Most strings in a record are short: look at their bytes directly before paying for a
    // vectorised search.
    let short = bytes.len().min(at + 24);
    while at < short {
        match bytes[at] {
            b'"' => return (at, false),
            b'\\' => break,
            _ => at += 1,
        }
    }
    let mut escaped = false;
    while let Some(found) = bytes
        .get(at..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        at += found;
        if bytes[at] == b'"' {
            return (at, escaped);
        }
        escaped = true;
        at += 2;
    }
    (bytes.len(), escaped)
}

/// The error message of a repeated member name; [`duplicate_name`] reads the name back.
struct DuplicateName<'a>(&'a str);

const DUPLICATE_PREFIX: &str = "the member name is given twice: ";

impl fmt::Display for DuplicateName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DUPLICATE_PREFIX}{}", self.0)
    }
}

/// The repeated name, when `message` is a duplicate-name error.
pub(crate) fn duplicate_name(message: &str) -> Option<&str> {
    message.strip_prefix(DUPLICATE_PREFIX)
}

/// The error for a repeated member name.
pub(crate) fn duplicate_error<E: de::Error>(name: &str) -> E {
    E::custom(DuplicateName(name))
}

/// Visits an object's members, each name decoded (borrowed unless escaped) and each value raw.
pub(crate) struct Members<F>(F);

pub(crate) fn members<'de, F: FnMut(Cow<'de, str>, &'de RawValue)>(visit: F) -> Members<F> {
    Members(visit)
}

impl<'de, F: FnMut(Cow<'de, str>, &'de RawValue)> Visitor<'de> for Members<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key_seed(NameSeed)? {
            let value: &'de RawValue = map.next_value()?;
            (self.0)(name, value);
        }
        Ok(())
    }
}

/// A member name, borrowed from the input when it has no escapes.
pub(crate) struct NameSeed;

impl<'de> de::DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(name))
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name.to_owned()))
    }

    fn visit_string<E: de::Error>(self, name: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name))
    }
}

/// The member names of one object seen so far, to refuse a name given twice.
///
/// Small objects (every real record) are checked on the stack, name by name, comparing a
/// fingerprint (length and first bytes) before the text; past [`Names::INLINE`] names, or once
/// a name had escapes, they are collected and sorted once at the end, so a hostile object of a
/// million names costs `n log n`, not `n²`.
#[derive(Default)]
pub(crate) struct Names<'a> {
    prints: [u64; Names::INLINE],
    inline: [&'a str; Names::INLINE],
    len: usize,
    spilled: Vec<Cow<'a, str>>,
}

impl<'a> Names<'a> {
    const INLINE: usize = 16;

    /// Adds `name`; `Err(name)` when it was already there (known at once only for small objects;
    /// [`finish`](Self::finish) tells for the others).
    pub(crate) fn insert(&mut self, name: Cow<'a, str>) -> Result<(), Cow<'a, str>> {
        match name {
            Cow::Borrowed(text) if self.spilled.is_empty() && self.len < Self::INLINE => {
                let print = fingerprint(text);
                let seen =
                    (0..self.len).any(|at| self.prints[at] == print && self.inline[at] == text);
                if seen {
                    return Err(name);
                }
                self.prints[self.len] = print;
                self.inline[self.len] = text;
                self.len += 1;
                Ok(())
            }
            name => {
                if self.spilled.is_empty() {
                    self.spilled.extend(
                        self.inline[..self.len]
                            .iter()
                            .map(|text| Cow::Borrowed(*text)),
                    );
                }
                self.spilled.push(name);
                Ok(())
            }
        }
    }

    /// `Err(name)` for a name given twice among the collected names.
    pub(crate) fn finish(mut self) -> Result<(), Cow<'a, str>> {
        self.spilled.sort_unstable();
        match self.spilled.windows(2).find(|pair| pair[0] == pair[1]) {
            Some(pair) => Err(pair[1].clone()),
            None => Ok(()),
        }
    }
}

/// The length and first eight bytes of a name, in one word.
fn fingerprint(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let head = match bytes.first_chunk::<8>() {
        Some(head) => u64::from_le_bytes(*head),
        None => bytes
            .iter()
            .fold(0, |acc, &byte| acc << 8 | u64::from(byte)),
    };
    head ^ (bytes.len() as u64).rotate_left(56)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_find_duplicates_small_and_large() {
        let mut names = Names::default();
        assert!(names.insert("a".into()).is_ok());
        assert_eq!(names.insert("a".into()), Err(Cow::Borrowed("a")));
        let mut names = Names::default();
        assert!(names.insert("abcdefgh-1".into()).is_ok());
        assert!(
            names.insert("abcdefgh-2".into()).is_ok(),
            "same fingerprint, other name"
        );
        assert!(names.insert(Cow::Owned("x".to_owned())).is_ok());
        assert!(
            names.insert("abcdefgh-1".into()).is_ok(),
            "checked at the end once spilled"
        );
        assert_eq!(names.finish(), Err(Cow::Borrowed("abcdefgh-1")));

        let mut names = Names::default();
        let many: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
        for name in &many {
            assert!(names.insert(Cow::Borrowed(name)).is_ok());
        }
        assert!(
            names.insert("n7".into()).is_ok(),
            "large objects are checked at the end"
        );
        assert_eq!(names.finish(), Err(Cow::Borrowed("n7")));
    }

    #[test]
    fn escaped_names_compare_decoded() {
        assert!(r#"{"a":1,"\u0061":2}"#.parse::<RawFields>().is_err());
        assert!(r#"{"a":1,"b":{"a":2}}"#.parse::<RawFields>().is_ok());
    }

    #[test]
    fn share_slices_the_source_without_copying() {
        let source = ByteString::from(String::from(r#"{"x":[1,2]}"#));
        let inner = &source[5..10];
        let _guard = SourceGuard::enter(source.clone());
        let shared = share(inner);
        assert_eq!(shared.as_ptr(), inner.as_ptr());
        let elsewhere = String::from("[1,2]");
        assert_ne!(share(&elsewhere).as_ptr(), elsewhere.as_ptr());
    }

    #[test]
    fn empty_and_whitespace_objects() {
        assert!(RawFields::empty().is_empty());
        assert!("{ \n }".parse::<RawFields>().unwrap().is_empty());
        assert!(!r#"{"a":null}"#.parse::<RawFields>().unwrap().is_empty());
    }
}
