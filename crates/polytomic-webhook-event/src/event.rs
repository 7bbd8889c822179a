//! The data a delivery carries: the event, the batch, its records.

use std::fmt;
use std::str::FromStr;

use std::borrow::Cow;

use bytestring::ByteString;
use serde::de::DeserializeOwned;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::raw::{NameSeed, RawFields, RawJson, share};
use crate::rejection::EventRejection;

/// A record's `fields` built as a JSON map, keyed by field name.
///
/// Building the map costs several times what [`RawFields`] (the default, which keeps the text)
/// costs; choose it when a handler walks every field of every record dynamically. A number that
/// a `serde_json::Value` cannot hold exactly is refused (422 `inexact_number`) rather than
/// rounded. A struct of your own (`SyncRecords<MyRow>`) is the third choice.
///
/// ```
/// use polytomic_webhook_event::Fields;
///
/// let fields: Fields = serde_json::from_str(r#"{"email":"a@example.com"}"#).unwrap();
/// assert_eq!(fields["email"], "a@example.com");
/// ```
pub type Fields = Map<String, Value>;

/// The `event` name of a batch of synced records.
pub const SYNC_RECORDS: &str = "sync.records";

/// The identifier of the Polytomic sync a delivery belongs to (`object.id`).
///
/// Polytomic uses UUIDs (`1ea8f90a-b22e-4218-86d5-c3c109e1fbb7`); the extractor checks that shape
/// unless [`EventConfig::require_uuid_sync_id`](crate::EventConfig::require_uuid_sync_id) is
/// turned off, in which case any non-empty string is accepted. The text is kept exactly as
/// received, so a forwarded batch carries the same id.
///
/// ```
/// use polytomic_webhook_event::SyncId;
///
/// let id: SyncId = "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7".parse().unwrap();
/// assert_eq!(id.as_str(), "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7");
/// assert!("not-a-uuid".parse::<SyncId>().is_err());
/// assert_eq!(SyncId::parse_relaxed("sync-42").unwrap().as_str(), "sync-42");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncId(String);

impl SyncId {
    /// Accepts a UUID in its hyphenated text form (8-4-4-4-12 hex digits, either case).
    pub fn parse(text: impl Into<String>) -> Result<Self, InvalidSyncId> {
        let text = text.into();
        if is_hyphenated_uuid(&text) {
            Ok(Self(text))
        } else {
            Err(InvalidSyncId { relaxed: false })
        }
    }

    /// Accepts any non-empty string, for senders whose sync ids are not UUIDs.
    pub fn parse_relaxed(text: impl Into<String>) -> Result<Self, InvalidSyncId> {
        let text = text.into();
        if text.is_empty() {
            Err(InvalidSyncId { relaxed: true })
        } else {
            Ok(Self(text))
        }
    }

    /// The id as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_hyphenated_uuid(text: &str) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut groups = text.split('-');
    GROUPS.iter().all(|&len| {
        groups
            .next()
            .is_some_and(|group| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
    }) && groups.next().is_none()
}

impl FromStr for SyncId {
    type Err = InvalidSyncId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for SyncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SyncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for SyncId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for SyncId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SyncId {
    /// Deserializes with the strict (UUID) check.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(text).map_err(serde::de::Error::custom)
    }
}

/// A sync id that failed validation.
///
/// ```
/// use polytomic_webhook_event::SyncId;
///
/// let error = SyncId::parse("42").unwrap_err();
/// assert!(error.to_string().contains("UUID"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidSyncId {
    relaxed: bool,
}

impl fmt::Display for InvalidSyncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.relaxed {
            f.write_str("the sync id must not be empty")
        } else {
            f.write_str("the sync id must be a UUID such as 1ea8f90a-b22e-4218-86d5-c3c109e1fbb7")
        }
    }
}

impl std::error::Error for InvalidSyncId {}

/// The hash Polytomic computes over a record's field names and values (`records[].hash`).
///
/// Useful for deduplicating redeliveries; treat it as opaque text. A hash parsed from a delivery
/// is a view of the delivery's buffer, not a copy.
///
/// ```
/// use polytomic_webhook_event::RecordHash;
///
/// let hash = RecordHash::new("b7421c6c57bd49f7");
/// assert_eq!(hash.as_str(), "b7421c6c57bd49f7");
/// assert_eq!(hash, "b7421c6c57bd49f7");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordHash(ByteString);

impl RecordHash {
    /// Wraps a hash.
    pub fn new(hash: impl Into<String>) -> Self {
        Self(ByteString::from(hash.into()))
    }

    /// The hash as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hash as an owned string.
    pub fn into_string(self) -> String {
        String::from(&*self.0)
    }
}

impl Serialize for RecordHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RecordHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = deserializer.deserialize_str(NameSeed)?;
        Ok(Self(match text {
            Cow::Borrowed(text) => share(text),
            Cow::Owned(text) => ByteString::from(text),
        }))
    }
}

impl fmt::Display for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AsRef<str> for RecordHash {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for RecordHash {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for RecordHash {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One synced record: its hash and its fields.
///
/// ```
/// use polytomic_webhook_event::{RawFields, Record, RecordHash};
///
/// let fields: RawFields = r#"{"email":"a@example.com"}"#.parse().unwrap();
/// let record = Record::new(RecordHash::new("b7421c6c57bd49f7"), fields);
/// assert_eq!(record.hash(), "b7421c6c57bd49f7");
/// assert_eq!(record.fields().get("email").unwrap().get(), r#""a@example.com""#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Record<T = RawFields> {
    hash: RecordHash,
    fields: T,
}

impl<T> Record<T> {
    /// A record with the given hash and fields.
    pub fn new(hash: RecordHash, fields: T) -> Self {
        Self { hash, fields }
    }

    /// The record's hash.
    pub fn hash(&self) -> &RecordHash {
        &self.hash
    }

    /// The record's fields.
    pub fn fields(&self) -> &T {
        &self.fields
    }

    /// The record's fields, mutably.
    pub fn fields_mut(&mut self) -> &mut T {
        &mut self.fields
    }

    /// The fields, dropping the hash.
    pub fn into_fields(self) -> T {
        self.fields
    }

    /// The hash and the fields.
    pub fn into_parts(self) -> (RecordHash, T) {
        (self.hash, self.fields)
    }
}

/// A validated `sync.records` batch: which sync sent it, and the records it carries.
///
/// As an extractor (see the [crate docs](crate)) it runs the handler only for a valid
/// `sync.records` delivery. It serializes to the shape of the delivery's `object`
/// (`{"id":…,"name":…,"records":[{"hash":…,"fields":{…}}],"metadata":{…}}`) and deserializes
/// from it too, so a batch can be stored or forwarded unchanged.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, SyncRecords, parse_sync_records};
///
/// let body = br#"{"event":"sync.records","object":{
///     "id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7","name":"Users",
///     "records":[{"hash":"b7421c6c57bd49f7","fields":{"email":"nathan@polytomic.com"}}]}}"#;
/// let batch: SyncRecords = parse_sync_records(body, &EventConfig::default()).unwrap();
/// assert_eq!(batch.name(), "Users");
/// assert_eq!(batch.len(), 1);
/// for record in &batch {
///     // The default record type keeps each record's fields as their JSON text.
///     assert_eq!(record.fields().as_str(), r#"{"email":"nathan@polytomic.com"}"#);
/// }
/// assert!(batch.metadata().is_empty());
///
/// let forwarded = serde_json::to_value(&batch).unwrap();
/// assert_eq!(forwarded["records"][0]["hash"], "b7421c6c57bd49f7");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SyncRecords<T = RawFields> {
    pub(crate) id: SyncId,
    pub(crate) name: String,
    pub(crate) records: Vec<Record<T>>,
    pub(crate) metadata: RawFields,
}

impl<T> SyncRecords<T> {
    /// A batch with no metadata.
    pub fn new(id: SyncId, name: impl Into<String>, records: Vec<Record<T>>) -> Self {
        Self {
            id,
            name: name.into(),
            records,
            metadata: RawFields::empty(),
        }
    }

    /// Replaces the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: RawFields) -> Self {
        self.metadata = metadata;
        self
    }

    /// The id of the sync that sent the batch.
    pub fn id(&self) -> &SyncId {
        &self.id
    }

    /// The name of the sync as configured in Polytomic.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The records, in delivery order.
    pub fn records(&self) -> &[Record<T>] {
        &self.records
    }

    /// The records, mutably.
    pub fn records_mut(&mut self) -> &mut Vec<Record<T>> {
        &mut self.records
    }

    /// The key-value metadata of the sync configuration, as its JSON text; empty when the
    /// delivery had none.
    pub fn metadata(&self) -> &RawFields {
        &self.metadata
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch has no records (a valid delivery).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Iterates over the records.
    pub fn iter(&self) -> std::slice::Iter<'_, Record<T>> {
        self.records.iter()
    }

    /// The records, dropping the rest of the batch.
    pub fn into_records(self) -> Vec<Record<T>> {
        self.records
    }
}

impl SyncRecords<RawFields> {
    /// Deserializes every record's fields into `T`, as a typed `SyncRecords<T>` extractor would
    /// have; the first record that does not fit is refused with the extractor's 422
    /// `invalid_record_fields`, located inside that record.
    ///
    /// ```
    /// use polytomic_webhook_event::{EventConfig, SyncRecords, parse_sync_records};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Contact {
    ///     email: String,
    /// }
    /// let body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
    ///     "name":"n","records":[{"hash":"h","fields":{"email":"a@example.com"}},
    ///                           {"hash":"i","fields":{"email":7}}]}}"#;
    /// let batch: SyncRecords = parse_sync_records(body, &EventConfig::default()).unwrap();
    /// let error = batch.deserialize_fields::<Contact>().err().unwrap();
    /// assert_eq!(error.code(), "invalid_record_fields");
    /// assert!(error.body_text().contains("object.records[1].fields.email"));
    /// ```
    pub fn deserialize_fields<T: DeserializeOwned>(
        &self,
    ) -> Result<SyncRecords<T>, EventRejection> {
        let records = self
            .records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                record
                    .fields()
                    .deserialize_as::<T>()
                    .map(|fields| Record::new(record.hash.clone(), fields))
                    .map_err(|error| error.into_rejection(index))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SyncRecords {
            id: self.id.clone(),
            name: self.name.clone(),
            records,
            metadata: self.metadata.clone(),
        })
    }
}

impl<T> IntoIterator for SyncRecords<T> {
    type Item = Record<T>;
    type IntoIter = std::vec::IntoIter<Record<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.records.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a SyncRecords<T> {
    type Item = &'a Record<T>;
    type IntoIter = std::slice::Iter<'a, Record<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}

impl<T: Serialize> Serialize for SyncRecords<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = serializer.serialize_struct("SyncRecords", 4)?;
        object.serialize_field("id", &self.id)?;
        object.serialize_field("name", &self.name)?;
        object.serialize_field("records", &self.records)?;
        object.serialize_field("metadata", &self.metadata)?;
        object.end()
    }
}

/// A Polytomic webhook delivery: a `sync.records` batch or an event this crate does not know.
///
/// Polytomic says receivers should act only on events they understand; new event types decode
/// as [`PolytomicEvent::Unknown`] instead of failing, so they can be acknowledged. As an
/// extractor it never rejects an unknown event; use [`SyncRecords`] as the extractor to have
/// unknown events answered by the configured policy instead.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, PolytomicEvent, parse};
///
/// let body = br#"{"event":"sync.future_thing","object":{"anything":1}}"#;
/// match parse::<polytomic_webhook_event::RawFields>(body, &EventConfig::default()).unwrap() {
///     PolytomicEvent::SyncRecords(batch) => unreachable!("{batch:?}"),
///     PolytomicEvent::Unknown { event, object } => {
///         assert_eq!(event, "sync.future_thing");
///         assert_eq!(object.as_str(), r#"{"anything":1}"#);
///     }
///     _ => unreachable!(),
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PolytomicEvent<T = RawFields> {
    /// `sync.records`: a batch of records changed since the last delivery.
    SyncRecords(SyncRecords<T>),
    /// An event type this version of the crate does not know.
    Unknown {
        /// The `event` name, e.g. `sync.future_thing`.
        event: String,
        /// The delivery's `object` as its JSON text (checked to be JSON, nothing more).
        object: RawJson,
    },
}

impl<T> PolytomicEvent<T> {
    /// The `event` name of the delivery.
    pub fn event_name(&self) -> &str {
        match self {
            Self::SyncRecords(_) => SYNC_RECORDS,
            Self::Unknown { event, .. } => event,
        }
    }
}

impl<T: Serialize> Serialize for PolytomicEvent<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut envelope = serializer.serialize_map(Some(2))?;
        envelope.serialize_entry("event", self.event_name())?;
        match self {
            Self::SyncRecords(batch) => envelope.serialize_entry("object", batch)?,
            Self::Unknown { object, .. } => envelope.serialize_entry("object", object)?,
        }
        envelope.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_check_is_exact() {
        assert!(SyncId::parse("1EA8F90A-B22E-4218-86D5-C3C109E1FBB7").is_ok());
        for bad in [
            "",
            "1ea8f90a-b22e-4218-86d5-c3c109e1fbb",
            "1ea8f90a-b22e-4218-86d5-c3c109e1fbb77",
            "1ea8f90ab22e421886d5c3c109e1fbb7",
            "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7-",
            "1ea8f90a-b22e-4218-86d5-c3c109e1fbbg",
            "1ea8f90a_b22e-4218-86d5-c3c109e1fbb7",
        ] {
            assert!(SyncId::parse(bad).is_err(), "{bad}");
        }
        assert!(SyncId::parse_relaxed("").is_err());
    }
}
