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

pub(crate) use crate::budget::{MAX_DEPTH, RoomGuard, TOO_DEEP};
use crate::budget::{RawText, SkipText, room, too_deep_error};

/// The index of the first `{` or `[` in `text` (one JSON value, or a whole body) that opens
/// more than `room` levels, if any. One pass, no recursion: strings are crossed as
/// [`string_end`] crosses them. On text that is not valid JSON it finds garbage, never panics.
pub(crate) fn too_deep_at(text: &[u8], room: usize) -> Option<usize> {
    let mut depth = 0_usize;
    let mut surrogate = false;
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'"' => at = string_end(text, at + 1, &mut surrogate).0,
            b'{' | b'[' => {
                depth += 1;
                if depth > room {
                    return Some(at);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    None
}

/// The check of a value the record type skipped (see
/// [`SkippedCheck`](crate::budget::SkippedCheck)): its nesting, and for the fields themselves
/// what `RawFields` checks.
pub(crate) fn check_skipped(text: &str, room: usize, top: bool) -> Result<(), String> {
    if top {
        return check_object(text, room);
    }
    refuse_too_deep_raw::<de::value::Error>(text, room).map_err(|error| error.to_string())
}

/// Refuses `text` (one JSON value) when it nests more than `room` levels.
pub(crate) fn refuse_too_deep_raw<E: de::Error>(text: &str, room: usize) -> Result<(), E> {
    match too_deep_at(text.as_bytes(), room) {
        Some(_) => Err(too_deep_error()),
        None => Ok(()),
    }
}

/// Skips one value whatever it is, as `IgnoredAny` does, refusing nesting past the room left
/// where it sits (`IgnoredAny` counts no depth).
pub(crate) struct Skip(pub(crate) usize);

impl<'de> de::DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let room = self.0;
        deserializer.deserialize_newtype_struct(
            crate::budget::RAW_VALUE_TOKEN,
            SkipText(|text: &str| check_skipped(text, room, false)),
        )
    }
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

    /// The JSON text without insignificant whitespace (strings and numbers byte for byte):
    /// one line whatever the sender's indentation. Borrowed, with no allocation, when the text
    /// is already compact.
    ///
    /// ```
    /// use polytomic_webhook_event::RawJson;
    ///
    /// let raw: RawJson = "[ 1.50,\r\n\t\"a  b\" ]".parse().unwrap();
    /// assert_eq!(raw.compact(), r#"[1.50,"a  b"]"#);
    /// ```
    pub fn compact(&self) -> Cow<'_, str> {
        compact(self.as_str())
    }
}

impl RawJson {
    /// Keeps `raw`, refusing a lone surrogate escape as the parsers that decode strings do. Its
    /// nesting is the caller's to check.
    pub(crate) fn from_raw<E: de::Error>(raw: &RawValue) -> Result<Self, E> {
        refuse_lone_surrogate(raw.get())?;
        Ok(Self(share(raw.get())))
    }
}

impl FromStr for RawJson {
    type Err = serde_json::Error;

    /// Validates `text` as one JSON value, nested no deeper than serde_json reads.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let raw: &RawValue = serde_json::from_str(text)?;
        refuse_too_deep_raw(raw.get(), MAX_DEPTH)?;
        refuse_lone_surrogate(raw.get())?;
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

/// `text` (valid JSON) without the whitespace between tokens; borrowed when it has none.
fn compact(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut kept: Option<String> = None;
    // Whitespace, quotes and backslashes are ASCII, so every cut lies on a char boundary.
    let mut run_start = 0;
    let mut in_string = false;
    let mut at = 0;
    while at < bytes.len() {
        match (in_string, bytes[at]) {
            // The byte after a backslash is never the quote that ends the string.
            (true, b'\\') => at += 1,
            (true, b'"') => in_string = false,
            (false, b'"') => in_string = true,
            (false, b' ' | b'\t' | b'\n' | b'\r') => {
                kept.get_or_insert_with(|| String::with_capacity(text.len()))
                    .push_str(&text[run_start..at]);
                run_start = at + 1;
            }
            _ => {}
        }
        at += 1;
    }
    match kept {
        None => Cow::Borrowed(text),
        Some(mut kept) => {
            kept.push_str(&text[run_start..]);
            Cow::Owned(kept)
        }
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
        deserializer.deserialize_newtype_struct(
            crate::budget::RAW_VALUE_TOKEN,
            RawText(|text: &str| {
                refuse_too_deep_raw::<de::value::Error>(text, room()).map_err(|e| e.to_string())?;
                refuse_lone_surrogate::<de::value::Error>(text).map_err(|e| e.to_string())?;
                Ok(Self(share(text)))
            }),
        )
    }
}

/// A record's `fields` kept as its validated JSON text: the default record type.
///
/// What the extractor checked: the text is a JSON object whose member names are all different,
/// no string in it holds half a surrogate pair as a `\u` escape (so serde_json can read
/// every string back), and it nests no deeper than
/// [`EventConfig::max_depth`](crate::EventConfig::max_depth) allows (so serde_json can read it
/// as a `Value`).
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

    /// The object's JSON text without insignificant whitespace, for line-oriented outputs
    /// (JSON Lines): names, strings and numbers stay byte for byte. Borrowed, with no
    /// allocation, when the text is already compact.
    ///
    /// ```
    /// use polytomic_webhook_event::RawFields;
    ///
    /// let fields: RawFields = "{\n  \"name\": \"Ada  Lovelace\",\n  \"id\": 1e400\n}".parse().unwrap();
    /// assert_eq!(fields.compact(), r#"{"name":"Ada  Lovelace","id":1e400}"#);
    /// assert!(matches!(fields.compact(), std::borrow::Cow::Owned(_)));
    ///
    /// let compact: RawFields = r#"{"id":7}"#.parse().unwrap();
    /// assert!(matches!(compact.compact(), std::borrow::Cow::Borrowed(_)));
    /// ```
    pub fn compact(&self) -> Cow<'_, str> {
        self.0.compact()
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
        check_object(&text, MAX_DEPTH).map_err(de::Error::custom)?;
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
        deserializer.deserialize_newtype_struct(
            crate::budget::RAW_VALUE_TOKEN,
            RawText(|text: &str| {
                check_object(text, room())?;
                Ok(Self(RawJson(share(text))))
            }),
        )
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

/// Checks that `text` (one valid JSON value) is an object whose member names are all different,
/// whose strings hold no lone surrogate escape, and which nests at most `room` levels of
/// objects and arrays, its own included.
pub(crate) fn check_object(text: &str, room: usize) -> Result<(), String> {
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
    let mut surrogate = false;
    // The nesting below the object's members, measured by the scans that cross them anyway.
    let mut deepest = 0;
    if names_differ_quick(text.as_bytes(), &mut surrogate, &mut deepest) == Some(true) {
        refuse_too_deep(deepest, room)?;
        return refuse_lone_surrogate_if(surrogate, text);
    }
    // A name given twice, or an object the quick check leaves to this one: every name decoded.
    let mut names = Names::default();
    let mut duplicate = None;
    surrogate = false;
    deepest = 0;
    for_each_name(text, &mut surrogate, &mut deepest, |name| {
        if duplicate.is_none() {
            duplicate = names.insert(name).err();
        }
    });
    // Nesting past the limit is malformed JSON (400), which outranks what the names show.
    refuse_too_deep(deepest, room)?;
    // A name with a lone surrogate decodes to nothing, so that is told first.
    refuse_lone_surrogate_if(surrogate, text)?;
    match duplicate.or_else(|| names.finish().err()) {
        Some(name) => Err(DuplicateName(&name).to_string()),
        None => Ok(()),
    }
}

/// Refuses an object whose members nest `deepest` levels when it has `room` for its own.
#[inline]
fn refuse_too_deep(deepest: usize, room: usize) -> Result<(), String> {
    if deepest >= room {
        return Err(TOO_DEEP.to_owned());
    }
    Ok(())
}

/// [`refuse_lone_surrogate`], run only when the scan saw an escape that may need it.
#[inline]
fn refuse_lone_surrogate_if(surrogate: bool, text: &str) -> Result<(), String> {
    if surrogate && lone_surrogate(text.as_bytes()).is_some() {
        return Err(LONE_SURROGATE.to_owned());
    }
    Ok(())
}

/// The error message of a lone surrogate escape (the slow path then finds where it is).
const LONE_SURROGATE: &str = "a string holds a lone UTF-16 surrogate escape";

/// Refuses `text` (valid JSON but for surrogate escapes, which serde_json does not check in text
/// it keeps raw) when a string in it holds a `\uD800`–`\uDBFF` escape not followed by a
/// `\uDC00`–`\uDFFF` one, or the second without the first: text serde_json refuses once it
/// decodes the string.
#[cold]
fn refuse_lone_surrogate<E: de::Error>(text: &str) -> Result<(), E> {
    match lone_surrogate(text.as_bytes()) {
        Some(_) => Err(E::custom(LONE_SURROGATE)),
        None => Ok(()),
    }
}

/// The index of the first lone surrogate escape in `text` (valid JSON but for those), if any.
fn lone_surrogate(text: &[u8]) -> Option<usize> {
    let unit = |at: usize| {
        let hex = std::str::from_utf8(text.get(at + 2..at + 6)?).ok()?;
        let unit = u16::from_str_radix(hex, 16).ok()?;
        (text.get(at..at + 2)? == b"\\u").then_some(unit)
    };
    let mut at = 0;
    loop {
        // Outside strings valid JSON has no backslash, so stopping at quotes too is harmless.
        at = quote_or_backslash(text, at);
        if text.get(at)? == &b'"' {
            at += 1;
            continue;
        }
        at += match unit(at) {
            Some(0xD800..=0xDBFF) => match unit(at + 6) {
                Some(0xDC00..=0xDFFF) => 12,
                _ => return Some(at),
            },
            Some(0xDC00..=0xDFFF) => return Some(at),
            Some(_) => 6,
            // Any other escape is two bytes long.
            None => 2,
        };
    }
}

/// Calls `visit` with each top-level member name of `object`, the text of one valid JSON object,
/// decoded (borrowed unless it has escapes), and sets `surrogate` as [`string_end`] does.
///
/// A hand-written scan that steps from member to member: the text was validated when serde_json
/// read it, so after a name come a colon and one value, and only a value that is an object or
/// an array needs its nesting followed. Strings, which make up most of a record, are crossed
/// eight bytes at a time. On text that is not a valid object it stops early or visits garbage
/// names, but never panics or loops.
fn for_each_name<'a>(
    object: &'a str,
    surrogate: &mut bool,
    deepest: &mut usize,
    mut visit: impl FnMut(Cow<'a, str>),
) {
    let bytes = object.as_bytes();
    let mut at = skip_space(bytes, 1); // past the `{`
    while bytes.get(at) == Some(&b'"') {
        let (end, escaped) = string_end(bytes, at + 1, surrogate);
        let (Some(name), Some(quoted)) = (object.get(at + 1..end), object.get(at..=end)) else {
            return;
        };
        visit(if escaped {
            // Escapes are rare in names: serde_json decodes them.
            Cow::Owned(serde_json::from_str(quoted).unwrap_or_default())
        } else {
            Cow::Borrowed(name)
        });
        // The colon, then the value.
        at = skip_space(bytes, skip_space(bytes, end + 1) + 1);
        at = skip_space(bytes, value_end(bytes, at, surrogate, deepest));
        if bytes.get(at) != Some(&b',') {
            return;
        }
        at = skip_space(bytes, at + 1);
    }
}

/// How many names [`names_differ_quick`] keeps track of.
const QUICK_NAMES: usize = 16;

/// Whether the top-level member names of `object` (the text of one valid JSON object) all
/// differ, told cheaply for the objects real records are: `None` when it cannot be told this
/// way (a name with escapes, more than [`QUICK_NAMES`] names, a name within eight bytes of the
/// end), `Some(false)` when two names may be the same.
///
/// Each name is read as the string scan reads it, eight bytes at a time; the first eight bytes
/// and the length pick one bit of a 64-bit filter, and only a name whose bit is already set is
/// compared with the names before it. Sets `surrogate` as [`string_end`] does.
fn names_differ_quick(object: &[u8], surrogate: &mut bool, deepest: &mut usize) -> Option<bool> {
    let mut seen = [(0_usize, 0_usize); QUICK_NAMES];
    let mut count = 0;
    let mut filter = 0_u64;
    let mut at = skip_space(object, 1); // past the `{`
    while object.get(at) == Some(&b'"') {
        if count == QUICK_NAMES {
            return None;
        }
        let start = at + 1;
        let word = u64::from_le_bytes(*object.get(start..)?.first_chunk::<8>()?);
        let found = bytes_equal_to(word, b'"') | bytes_equal_to(word, b'\\');
        let (end, head) = if found == 0 {
            (quote_or_backslash(object, start + 8), word)
        } else {
            let len = found.trailing_zeros() / 8;
            (start + len as usize, word & ((1 << (8 * len)) - 1))
        };
        if object.get(end) != Some(&b'"') {
            return None; // an escape
        }
        let key = head ^ (end - start) as u64;
        // Fibonacci hashing: the top six bits of the product depend on every bit of the key.
        let bit = 1 << (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58);
        if filter & bit != 0 {
            let name = &object[start..end];
            if seen[..count].iter().any(|&(s, e)| &object[s..e] == name) {
                return Some(false);
            }
        }
        filter |= bit;
        seen[count] = (start, end);
        count += 1;
        // The colon, then the value; in the compact JSON senders write, no space around them.
        at = end + 1;
        if object.get(at) != Some(&b':') {
            at = skip_space(object, at);
        }
        at = value_end(object, skip_space(object, at + 1), surrogate, deepest);
        if object.get(at) != Some(&b',') {
            at = skip_space(object, at);
            if object.get(at) != Some(&b',') {
                return Some(true);
            }
        }
        at = skip_space(object, at + 1);
    }
    Some(true)
}

/// The index of the first byte at or after `at` that is not JSON whitespace. Outside strings,
/// valid JSON has no other bytes at or below a space.
#[inline(always)]
fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|&byte| byte <= b' ') {
        at += 1;
    }
    at
}

/// The index just past the valid JSON value that starts at `at` (see [`string_end`] for
/// `surrogate`, [`nested_end`] for `deepest`).
#[inline(always)]
fn value_end(bytes: &[u8], at: usize, surrogate: &mut bool, deepest: &mut usize) -> usize {
    match bytes.get(at) {
        Some(b'"') => string_end(bytes, at + 1, surrogate).0 + 1,
        Some(b'{' | b'[') => nested_end(bytes, at, surrogate, deepest),
        // A number, `true`, `false` or `null`: it ends where the member does.
        _ => scalar_end(bytes, at),
    }
}

/// The index of the first `,`, `}` or whitespace at or after `at`: the end of a number, `true`,
/// `false` or `null` that is a member's value (in an array, [`nested_end`] crosses it).
#[inline(always)]
fn scalar_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(*chunk);
        let found =
            bytes_equal_to(word, b',') | bytes_equal_to(word, b'}') | bytes_below(word, b' ' + 1);
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while bytes
        .get(at)
        .is_some_and(|&byte| !matches!(byte, b',' | b'}' | 0..=b' '))
    {
        at += 1;
    }
    at
}

/// The index just past the object or array that opens at `at`. Raises `deepest` to the levels
/// it nests, its own included.
fn nested_end(bytes: &[u8], mut at: usize, surrogate: &mut bool, deepest: &mut usize) -> usize {
    let mut depth = 0_usize;
    let mut most = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => at = string_end(bytes, at + 1, surrogate).0,
            b'{' | b'[' => {
                depth += 1;
                most = most.max(depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    *deepest = (*deepest).max(most);
                    return at + 1;
                }
            }
            _ => {}
        }
        at += 1;
    }
    *deepest = (*deepest).max(most);
    bytes.len()
}

/// The index of the quote that closes the string whose text starts at `at` (the length of
/// `bytes` if none does), and whether the string has escapes. Sets `surrogate` when it crosses a
/// `\u` escape that may be half of a surrogate pair.
#[inline(always)]
fn string_end(bytes: &[u8], mut at: usize, surrogate: &mut bool) -> (usize, bool) {
    let mut escaped = false;
    loop {
        at = quote_or_backslash(bytes, at);
        match bytes.get(at) {
            Some(b'"') => return (at, escaped),
            Some(_) => {
                // A backslash: the character it escapes cannot close the string.
                escaped = true;
                // serde_json keeps `\uD…` unchecked in raw text; only such text is looked at
                // again, so strings without it pay nothing.
                if bytes.get(at + 1) == Some(&b'u')
                    && matches!(bytes.get(at + 2), Some(b'd' | b'D'))
                {
                    *surrogate = true;
                }
                at += 2;
            }
            None => return (bytes.len(), escaped),
        }
    }
}

/// The index of the first `"` or `\\` at or after `at` (the length of `bytes` if none), eight
/// bytes at a time while they last.
#[inline(always)]
fn quote_or_backslash(bytes: &[u8], mut at: usize) -> usize {
    while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(*chunk);
        let found = bytes_equal_to(word, b'"') | bytes_equal_to(word, b'\\');
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while bytes
        .get(at)
        .is_some_and(|&byte| byte != b'"' && byte != b'\\')
    {
        at += 1;
    }
    at.min(bytes.len())
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// A word with the high bit set in the lowest byte of `word` equal to `byte`, if any. Bits
/// above it may be set too (the borrow of the subtraction runs upwards), never below it, so
/// only the lowest set bit is to be trusted.
#[inline]
const fn bytes_equal_to(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ (ONES * byte as u64), 1)
}

/// A word with the high bit set in the lowest byte of `word` below `limit` (at most 128), if
/// any; as with [`bytes_equal_to`], only the lowest set bit is to be trusted.
#[inline]
const fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * limit as u64) & !word & HIGHS
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
/// Small objects (every real record) are checked on the stack: a 64-bit filter, one bit per
/// name picked by a hash of its length and three of its bytes, says whether a name may have
/// been seen; only then is it compared with the earlier names. Past [`Names::INLINE`] names,
/// or once a name had escapes, they are collected and sorted once at the end, so a hostile
/// object of a million names costs `n log n`, not `n²`.
#[derive(Default)]
pub(crate) struct Names<'a> {
    filter: u64,
    inline: [&'a str; Names::INLINE],
    len: usize,
    spilled: Vec<Cow<'a, str>>,
}

impl<'a> Names<'a> {
    const INLINE: usize = 16;
    /// The value of `len` once the names are collected in `spilled`.
    const SPILLED: usize = usize::MAX;

    /// Adds `name`; `Err(name)` when it was already there (known at once only for small objects;
    /// [`finish`](Self::finish) tells for the others).
    #[inline]
    pub(crate) fn insert(&mut self, name: Cow<'a, str>) -> Result<(), Cow<'a, str>> {
        match name {
            Cow::Borrowed(text) if self.len < Self::INLINE => {
                let bit = filter_bit(text);
                if self.filter & bit != 0 && self.inline[..self.len].contains(&text) {
                    return Err(name);
                }
                self.filter |= bit;
                self.inline[self.len] = text;
                self.len += 1;
                Ok(())
            }
            name => {
                self.spill(name);
                Ok(())
            }
        }
    }

    /// Collects `name` to be checked at the end, with the names kept so far.
    #[cold]
    fn spill(&mut self, name: Cow<'a, str>) {
        if self.len != Self::SPILLED {
            self.spilled.extend(
                self.inline[..self.len]
                    .iter()
                    .map(|text| Cow::Borrowed(*text)),
            );
            self.len = Self::SPILLED;
        }
        self.spilled.push(name);
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

/// The filter bit of `name`: equal names always share it; different ones rarely do.
#[inline]
fn filter_bit(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let len = bytes.len();
    let (first, middle, last) = match bytes {
        [] => (0, 0, 0),
        [first, ..] => (*first, bytes[len / 2], bytes[len - 1]),
    };
    let key = u64::from_le_bytes([first, middle, last, 0, 0, 0, 0, 0]) ^ ((len as u64) << 24);
    // Fibonacci hashing: the top six bits of the product mix every bit of the key.
    1 << (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
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
        assert_eq!(filter_bit("axxb"), filter_bit("ayxb"));
        assert!(names.insert("axxb".into()).is_ok());
        assert!(
            names.insert("ayxb".into()).is_ok(),
            "same filter bit, other name"
        );
        assert_eq!(names.insert("ayxb".into()), Err(Cow::Borrowed("ayxb")));
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

    /// The names `for_each_name` visits, in order.
    fn names_of(object: &str) -> Vec<String> {
        let mut names = Vec::new();
        for_each_name(object, &mut false, &mut 0, |name| {
            names.push(name.into_owned());
        });
        names
    }

    /// What serde_json reads as the object's top-level names, in order: the reference.
    fn reference_names(object: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut deserializer = serde_json::Deserializer::from_str(object);
        deserializer
            .deserialize_map(members(|name, _| names.push(name.into_owned())))
            .unwrap();
        names
    }

    #[test]
    fn the_scan_reads_only_top_level_names_whatever_the_values_hold() {
        let cases: &[(&str, &[&str])] = &[
            ("{}", &[]),
            (" { \n\t } ".trim(), &[]),
            (r#"{"a":1}"#, &["a"]),
            // Values that look like members, in strings and in nesting.
            (
                r#"{"a":"x\",\"b\":1","c":{"b":[1,{"d":"}"}],"e":"]"},"f":[]}"#,
                &["a", "c", "f"],
            ),
            // Whitespace everywhere the grammar allows it.
            (
                "{ \"a\" :\n1 , \"b\"\t: [ 1 , 2 ] ,\r\n\"c\": null }",
                &["a", "b", "c"],
            ),
            // Escaped quotes and backslashes in names, before and after an eight-byte boundary.
            (
                r#"{"\"":1,"abcdefg\"":2,"abcdefgh\\":3,"\\\\\"x":4}"#,
                &["\"", "abcdefg\"", "abcdefgh\\", "\\\\\"x"],
            ),
            // A `\u` escape is read as the character it stands for.
            (
                r#"{"\u0061":1,"caf\u00e9":true,"\ud83d\ude00":false}"#,
                &["a", "café", "😀"],
            ),
            // Non-ASCII text, numbers of every form, literals.
            (
                r#"{"é":-1.5e+10,"ñ":0,"x":true,"y":false,"z":null,"long name of many bytes":1E-7}"#,
                &["é", "ñ", "x", "y", "z", "long name of many bytes"],
            ),
        ];
        for (object, expected) in cases {
            assert_eq!(names_of(object), *expected, "{object}");
            assert_eq!(reference_names(object), *expected, "{object}");
        }
    }

    #[test]
    fn the_quick_check_decides_only_what_it_can() {
        let quick = |object: &str| names_differ_quick(object.as_bytes(), &mut false, &mut 0);
        // Names shorter than, as long as and longer than the eight bytes read at once; two
        // that share those eight bytes and their length differ only after them.
        let distinct = r#"{"z":"5","id":1,"abcdefgh":2,"abcdefgh-one":[3],"abcdefgh-two":{"x":4}}"#;
        assert_eq!(quick(distinct), Some(true));
        assert_eq!(check_object(distinct, MAX_DEPTH), Ok(()));
        for twice in [
            r#"{"id":1,"email":"a","id":2,"tail":0}"#,
            r#"{"abcdefgh-one":1,"abcdefgh-one":2,"tail":0}"#,
        ] {
            assert_eq!(quick(twice), Some(false), "{twice}");
            assert!(check_object(twice, MAX_DEPTH).is_err(), "{twice}");
        }
        // Left to the full check: escapes, many names, a name too near the end.
        let escaped = r#"{"a":1,"\u0062":2,"tail":0}"#;
        let many: String = (0..=QUICK_NAMES)
            .map(|i| format!(r#""n{i}":{i},"#))
            .collect();
        let many = format!("{{{many}\"tail\":0}}");
        for object in [escaped, &many, r#"{"a":1}"#] {
            assert_eq!(quick(object), None, "{object}");
            assert_eq!(check_object(object, MAX_DEPTH), Ok(()), "{object}");
        }
    }

    #[test]
    fn deep_nesting_is_crossed_without_recursion() {
        let depth = 100_000;
        let object = format!(
            r#"{{"a":{}1{},"b":2}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(names_of(&object), ["a", "b"]);
        let object = format!(
            r#"{{"a":{}1{},"a":2}}"#,
            r#"{"a":"#.repeat(depth),
            "}".repeat(depth)
        );
        assert_eq!(names_of(&object), ["a", "a"]);
        assert!(
            check_object(&object, usize::MAX)
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn the_scan_never_panics_on_text_that_is_not_a_valid_object() {
        for text in [
            "{",
            "{\"",
            "{\"a",
            "{\"a\\",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":\"",
            "{\"a\":[",
            "{\"a\":1,",
            "{\"a\":1,\"",
            "{\"abcdefghijk",
            "{\"a\":{\"b\":\"c\\\"}",
            "{\"é\\",
            "{ ",
        ] {
            let _ = names_of(text);
            let _ = check_object(text, MAX_DEPTH);
        }
    }

    #[test]
    fn compact_drops_whitespace_between_tokens_and_keeps_strings_and_numbers_byte_for_byte() {
        // JSONTestSuite's y_object_with_newlines, and the indentations real senders use.
        let cases = [
            ("{\n\"a\": \"b\"\n}", r#"{"a":"b"}"#),
            (
                "{\r\n\t\"a\" :\t[ 1 , 2.50e+3 ,-0.0 ]\r\n}",
                r#"{"a":[1,2.50e+3,-0.0]}"#,
            ),
            (
                r#"{ "a\" b" : " x\\ " , "c\\" : "\u0041 \n" }"#,
                r#"{"a\" b":" x\\ ","c\\":"\u0041 \n"}"#,
            ),
            (
                "{ \"é\" : \"日本 語\" , \"n\": 123456789012345678901234567890 }",
                r#"{"é":"日本 語","n":123456789012345678901234567890}"#,
            ),
        ];
        for (text, expected) in cases {
            let fields: RawFields = text.parse().unwrap();
            assert_eq!(fields.compact(), expected, "{text:?}");
            assert!(
                matches!(compact(expected), Cow::Borrowed(_)),
                "{expected:?}"
            );
        }
    }

    mod properties {
        use std::collections::HashSet;
        use std::fmt::Write as _;

        use proptest::prelude::*;

        use super::*;

        /// A string from a small alphabet (so that names repeat), as `(decoded, JSON text)`:
        /// each character written as itself (escaped where JSON requires it) or as `\u` escapes.
        fn string() -> impl Strategy<Value = (String, String)> {
            let chars = prop::sample::select(vec!['a', 'b', '"', '\\', '\n', ' ', 'é', '😀']);
            prop::collection::vec((chars, any::<bool>()), 0..5).prop_map(|chars| {
                let mut decoded = String::new();
                let mut text = String::from('"');
                for (c, as_unicode) in chars {
                    decoded.push(c);
                    if as_unicode {
                        for unit in c.encode_utf16(&mut [0; 2]) {
                            let _ = write!(text, "\\u{unit:04x}");
                        }
                    } else {
                        match c {
                            '"' => text.push_str("\\\""),
                            '\\' => text.push_str("\\\\"),
                            '\n' => text.push_str("\\n"),
                            c => text.push(c),
                        }
                    }
                }
                text.push('"');
                (decoded, text)
            })
        }

        /// Any JSON value as text, nested objects and arrays included.
        fn value() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_owned()),
                any::<bool>().prop_map(|b| b.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| format!("{f:e}")),
                string().prop_map(|(_, text)| text),
            ];
            leaf.prop_recursive(4, 32, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4)
                        .prop_map(|items| format!("[{}]", items.join(" ,"))),
                    prop::collection::vec((string(), inner), 0..4).prop_map(|members| {
                        let members: Vec<String> = members
                            .into_iter()
                            .map(|((_, name), value)| format!("{name}:{value}"))
                            .collect();
                        format!("{{{}}}", members.join(","))
                    }),
                ]
            })
        }

        proptest! {
            /// Compacting keeps the value (strings decode the same, so no space inside one was
            /// dropped) and leaves no whitespace between tokens (compacting again changes
            /// nothing).
            #[test]
            fn compact_keeps_the_value_and_leaves_one_line(
                value in value(),
                space in prop::sample::select(vec![" ", "\n", "\r\n\t", "\n    "]),
            ) {
                let spaced = format!("{space}[{space}{value}{space},{space}{{{space}\"k\"{space}:{space}{value}{space}}}{space}]{space}");
                let compacted = compact(&spaced);
                let parsed = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
                prop_assert_eq!(parsed(&compacted), parsed(&spaced));
                prop_assert!(matches!(compact(&compacted), Cow::Borrowed(_)), "{}", compacted);
                prop_assert!(!compacted.contains('\n'));
            }
        }

        proptest! {
            /// The scan reads the names serde_json reads, and refuses exactly the objects that
            /// repeat a name once decoded.
            #[test]
            fn the_scan_agrees_with_serde_json(
                members in prop::collection::vec((string(), value()), 0..12),
                space in prop::sample::select(vec!["", " ", " \n\t\r "]),
            ) {
                let mut text = format!("{{{space}");
                for (index, ((_, name), value)) in members.iter().enumerate() {
                    if index > 0 {
                        let _ = write!(text, "{space},{space}");
                    }
                    let _ = write!(text, "{name}{space}:{space}{value}");
                }
                let _ = write!(text, "{space}}}");
                let expected: Vec<String> =
                    members.iter().map(|((decoded, _), _)| decoded.clone()).collect();
                prop_assert_eq!(&reference_names(&text), &expected, "the generator: {}", text);
                prop_assert_eq!(&names_of(&text), &expected, "{}", text);
                let unique = expected.iter().collect::<HashSet<_>>().len() == expected.len();
                prop_assert_eq!(check_object(&text, MAX_DEPTH).is_ok(), unique, "{}", text);
            }

            /// Strings of surrogate escapes, pairs and backslashes in any order: the raw check
            /// refuses exactly what serde_json refuses once it decodes them.
            #[test]
            fn the_surrogate_check_agrees_with_serde_json(
                pieces in prop::collection::vec(prop::sample::select(vec![
                    r"\ud800", r"\uDBFF", r"\udc00", r"\uDE24", r"\ud83d\ude00", r"\u00e9",
                    r"\\", r"\\u", r"\u005c", r"\u0075", "d800", "x", r#"\""#,
                ]), 0..8),
                in_name in any::<bool>(),
            ) {
                let string = format!("\"{}\"", pieces.concat());
                let text = if in_name {
                    format!(r#"{{"a":[{string}],{string}:1}}"#)
                } else {
                    format!(r#"{{"a":{{"b":{string}}}}}"#)
                };
                let decodes = serde_json::from_str::<serde_json::Value>(&text).is_ok();
                prop_assert_eq!(check_object(&text, MAX_DEPTH).is_ok(), decodes, "{}", text);
            }
        }
    }

    /// Found by fuzzing: serde_json keeps a lone surrogate escape in raw text that it refuses
    /// once it decodes the string, so the raw check must refuse it too.
    #[test]
    fn lone_surrogate_escapes_are_refused_and_pairs_kept() {
        let refused = [
            r#"{"a":"\ud800"}"#,                  // lone high, at the end
            r#"{"a":"\uD800x"}"#,                 // lone high, then a character
            r#"{"a":"\ud800\u0041"}"#,            // high, then an escape that is not low
            r#"{"a":"\ude24"}"#,                  // lone low
            r#"{"a":"A\u00e9\ude24"}"#,           // the fuzz input's shape
            r#"{"a":"\udc00\ud800"}"#,            // a pair the wrong way round
            r#"{"\ud800":1}"#,                    // in a name
            r#"{"a":[1,{"b":["x","\udfff"]}]}"#,  // nested
            r#"{"a":1,"\u0062":"\ud800","a":2}"#, // with a name given twice
        ];
        for text in refused {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "{text}"
            );
            assert_eq!(
                check_object(text, MAX_DEPTH),
                Err(LONE_SURROGATE.to_owned()),
                "{text}"
            );
            assert!(text.parse::<RawFields>().is_err(), "{text}");
            assert!(text.parse::<RawJson>().is_err(), "{text}");
        }
        let kept = [
            r#"{"a":"\ud83d\ude00"}"#,   // a valid pair
            r#"{"a":"\uD83D\uDE00x"}"#,  // upper case
            r#"{"a":"\\ud800"}"#,        // an escaped backslash, then plain text
            r#"{"a":"\\\\ud800\\"}"#,    // more of them
            r#"{"a":"\ud7ff\ue000"}"#,   // either side of the surrogates
            r#"{"a":"\u00e9\u4e2d"}"#,   // the fuzz input's valid records
            r#"{"a":"\"\ud800\udc00"}"#, // after another escape
        ];
        for text in kept {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text}"
            );
            assert_eq!(check_object(text, MAX_DEPTH), Ok(()), "{text}");
            assert!(text.parse::<RawFields>().is_ok(), "{text}");
            assert!(text.parse::<RawJson>().is_ok(), "{text}");
        }
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
