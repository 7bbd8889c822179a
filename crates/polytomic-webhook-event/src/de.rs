//! The envelope's deserializer: one streaming pass, with the configuration carried in seeds.
//!
//! Valid input costs one `serde_json` pass and no path bookkeeping. When a step fails, each
//! level of the envelope records where it was while the error unwinds (pushing onto
//! [`Failure::path`]), and marks failures that need a specific rejection (too many records, a
//! field-name collision, fields that `T` refused) in [`Failure::kind`], since a `serde` error
//! can carry only a message. Inside a record's `fields` the envelope cannot see where `T`
//! failed; the slow path in `parse` re-runs with [`Context::track_fields`] set to wrap `T` in
//! `serde_path_to_error` and learn that too.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;

use std::borrow::Cow;

use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer, StringDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess,
    SeqAccess, Visitor,
};
use serde::{Deserialize, forward_to_deserialize_any};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::budget::{Budget, Floats, deserialize_within, is_raw_text};
use crate::config::EventConfig;
use crate::event::{PolytomicEvent, Record, RecordHash, SYNC_RECORDS, SyncId, SyncRecords};
use crate::normalize::{Collision, normalize_fields};
use crate::numbers::inexact_member;
use crate::raw::{
    MAX_DEPTH, NameSeed, Names, RawFields, RawJson, RoomGuard, Skip, duplicate_error,
    refuse_too_deep_raw, source_len,
};
use crate::sanitize::strip_position;

/// The objects and arrays open around a member of the envelope (`{"event":…}`), of the batch
/// (`{"object":{…}}`) and of a record (`…"records":[{…}]`), counted from the body's top as the
/// depth limit counts them: a record's `fields` sit inside four, so they are the fifth level.
const IN_ENVELOPE: usize = 1;
const IN_BATCH: usize = 2;
const IN_RECORD: usize = 4;

thread_local! {
    static TRACKED_PARSES: Cell<usize> = const { Cell::new(0) };
}

/// How many parses on this thread wrapped record fields in `serde_path_to_error`. A test hook
/// (feature `testing`): valid input must leave it unchanged.
#[cfg(feature = "testing")]
pub fn tracked_parses() -> usize {
    TRACKED_PARSES.with(Cell::get)
}

/// One parse: the configuration, and what went wrong if anything did.
pub(crate) struct Context<'c> {
    config: &'c EventConfig,
    /// Wrap each record's `T` in `serde_path_to_error` (slow path only).
    track_fields: bool,
    /// What building the records may take, shared by the whole batch.
    budget: Budget,
    /// Check each record's numbers before building it (see `numbers`).
    check_numbers: bool,
    failure: RefCell<Failure>,
}

/// What the envelope learned about a failure while it unwound.
#[derive(Debug, Default)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    /// Innermost segment first.
    pub(crate) path: Vec<Segment>,
}

#[derive(Debug, Default)]
pub(crate) enum FailureKind {
    /// The envelope itself is wrong (or the error came from `serde_json`).
    #[default]
    Envelope,
    /// `fields` was an object and `T` refused it. On the slow path the location inside `fields`
    /// is the innermost [`Segment::Inner`] of the path.
    RecordFields,
    TooManyRecords,
    /// Building the records would pass [`EventConfig::max_heap_bytes`].
    HeapBudget,
    /// The named member of a record's fields holds a number an `f64` would change.
    InexactNumber(String),
    Collision(Collision),
}

#[derive(Debug)]
pub(crate) enum Segment {
    Key(&'static str),
    Index(usize),
    /// A path inside a record's fields, as `serde_path_to_error` renders it.
    Inner(String),
}

impl<'c> Context<'c> {
    pub(crate) fn new(config: &'c EventConfig, track_fields: bool) -> Self {
        if track_fields {
            TRACKED_PARSES.with(|runs| runs.set(runs.get() + 1));
        }
        Self {
            config,
            track_fields,
            budget: Budget::new(config.max_heap_bytes)
                .with_depth(config.max_depth, crate::raw::check_skipped),
            check_numbers: false,
            failure: RefCell::new(Failure::default()),
        }
    }

    /// This parse checks every record's numbers (see `numbers`).
    pub(crate) fn checking_numbers(mut self) -> Self {
        self.check_numbers = true;
        self
    }

    /// The floats the records' types built.
    pub(crate) fn floats(&self) -> Floats {
        self.budget.floats()
    }

    /// How many levels a value inside `depth` open objects and arrays may still open.
    fn room(&self, depth: usize) -> usize {
        self.config.max_depth.min(MAX_DEPTH).saturating_sub(depth)
    }

    pub(crate) fn into_failure(self) -> Failure {
        self.failure.into_inner()
    }

    fn fail(&self, kind: FailureKind) {
        self.failure.borrow_mut().kind = kind;
    }

    /// `T` refused a record's fields object; `inner` is where, when tracked.
    fn record_fields_failed(&self, inner: Option<String>) {
        let mut failure = self.failure.borrow_mut();
        failure.kind = FailureKind::RecordFields;
        if let Some(inner) = inner {
            failure.path.push(Segment::Inner(inner));
        }
    }

    /// Records `segment` as part of the failure's location if `result` is an error.
    fn at<R, E>(&self, segment: Segment, result: Result<R, E>) -> Result<R, E> {
        if result.is_err() {
            self.failure.borrow_mut().path.push(segment);
        }
        result
    }
}

/// Deserializes a whole delivery (`{"event":…,"object":…}`).
pub(crate) struct EnvelopeSeed<'a, 'c, T> {
    cx: &'a Context<'c>,
    marker: PhantomData<fn() -> T>,
}

impl<'a, 'c, T> EnvelopeSeed<'a, 'c, T> {
    pub(crate) fn new(cx: &'a Context<'c>) -> Self {
        Self {
            cx,
            marker: PhantomData,
        }
    }
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for EnvelopeSeed<'_, '_, T> {
    type Value = PolytomicEvent<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for EnvelopeSeed<'_, '_, T> {
    type Value = PolytomicEvent<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Polytomic webhook envelope (a JSON object with `event` and `object`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const KEYS: &[&str] = &["event", "object"];
        let cx = self.cx;
        let mut event: Option<String> = None;
        let mut batch: Option<SyncRecords<T>> = None;
        // The object of an unknown event, or of any event when `object` comes before `event`
        // (Polytomic sends `event` first), kept as its text: validated, never built into a tree.
        let mut raw: Option<&'de RawValue> = None;
        while let Some(key) = map.next_key_seed(KeySeed(KEYS))? {
            match key {
                Some(0) => {
                    if event.is_some() {
                        return Err(A::Error::duplicate_field("event"));
                    }
                    event = Some(cx.at(Segment::Key("event"), map.next_value())?);
                }
                Some(1) => {
                    if batch.is_some() || raw.is_some() {
                        return Err(A::Error::duplicate_field("object"));
                    }
                    if event.as_deref() == Some(SYNC_RECORDS) {
                        batch = Some(cx.at(
                            Segment::Key("object"),
                            map.next_value_seed(BatchSeed::new(cx)),
                        )?);
                    } else {
                        let object: &RawValue = cx.at(Segment::Key("object"), map.next_value())?;
                        // Kept raw, or read again below: serde_json counted no depth in it.
                        refuse_too_deep_raw(object.get(), cx.room(IN_ENVELOPE))?;
                        raw = Some(object);
                    }
                }
                _ => {
                    map.next_value_seed(Skip(cx.room(IN_ENVELOPE)))?;
                }
            }
        }
        let event = event.ok_or_else(|| A::Error::missing_field("event"))?;
        match (batch, raw) {
            (Some(batch), _) => Ok(PolytomicEvent::SyncRecords(batch)),
            (None, Some(object)) if event == SYNC_RECORDS => {
                // The second pass over the object's text, now that the event is known.
                let mut deserializer = serde_json::Deserializer::from_str(object.get());
                let batch = BatchSeed::new(cx)
                    .deserialize(&mut deserializer)
                    .map_err(|error| A::Error::custom(strip_position(&error.to_string())));
                Ok(PolytomicEvent::SyncRecords(
                    cx.at(Segment::Key("object"), batch)?,
                ))
            }
            (None, Some(object)) => Ok(PolytomicEvent::Unknown {
                event,
                object: RawJson::from_raw(object)?,
            }),
            (None, None) => Err(A::Error::missing_field("object")),
        }
    }
}

/// Deserializes a delivery's `object` for `sync.records`.
pub(crate) struct BatchSeed<'a, 'c, T> {
    cx: &'a Context<'c>,
    marker: PhantomData<fn() -> T>,
}

impl<'a, 'c, T> BatchSeed<'a, 'c, T> {
    pub(crate) fn new(cx: &'a Context<'c>) -> Self {
        Self {
            cx,
            marker: PhantomData,
        }
    }
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for BatchSeed<'_, '_, T> {
    type Value = SyncRecords<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for BatchSeed<'_, '_, T> {
    type Value = SyncRecords<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sync.records object with `id`, `name` and `records`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const KEYS: &[&str] = &["id", "name", "records", "metadata"];
        let cx = self.cx;
        let mut id = None;
        let mut name = None;
        let mut records = None;
        let mut metadata: Option<Option<RawFields>> = None;
        while let Some(key) = map.next_key_seed(KeySeed(KEYS))? {
            match key {
                Some(0) => {
                    if id.is_some() {
                        return Err(A::Error::duplicate_field("id"));
                    }
                    let text: String = cx.at(Segment::Key("id"), map.next_value())?;
                    let parsed = if cx.config.require_uuid_sync_id {
                        SyncId::parse(text)
                    } else {
                        SyncId::parse_relaxed(text)
                    };
                    id = Some(cx.at(Segment::Key("id"), parsed.map_err(A::Error::custom))?);
                }
                Some(1) => {
                    if name.is_some() {
                        return Err(A::Error::duplicate_field("name"));
                    }
                    name = Some(cx.at(Segment::Key("name"), map.next_value::<String>())?);
                }
                Some(2) => {
                    if records.is_some() {
                        return Err(A::Error::duplicate_field("records"));
                    }
                    records = Some(cx.at(
                        Segment::Key("records"),
                        map.next_value_seed(RecordsSeed::<T>::new(cx)),
                    )?);
                }
                Some(3) => {
                    if metadata.is_some() {
                        return Err(A::Error::duplicate_field("metadata"));
                    }
                    let _room = RoomGuard::enter(cx.room(IN_BATCH));
                    metadata = Some(cx.at(Segment::Key("metadata"), map.next_value())?);
                }
                _ => {
                    map.next_value_seed(Skip(cx.room(IN_BATCH)))?;
                }
            }
        }
        Ok(SyncRecords {
            id: id.ok_or_else(|| A::Error::missing_field("id"))?,
            name: name.ok_or_else(|| A::Error::missing_field("name"))?,
            records: records.ok_or_else(|| A::Error::missing_field("records"))?,
            metadata: metadata.flatten().unwrap_or_default(),
        })
    }
}

/// Deserializes `records`, stopping as soon as there are more than allowed.
struct RecordsSeed<'a, 'c, T> {
    cx: &'a Context<'c>,
    marker: PhantomData<fn() -> T>,
}

impl<'a, 'c, T> RecordsSeed<'a, 'c, T> {
    fn new(cx: &'a Context<'c>) -> Self {
        Self {
            cx,
            marker: PhantomData,
        }
    }
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for RecordsSeed<'_, '_, T> {
    type Value = Vec<Record<T>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for RecordsSeed<'_, '_, T> {
    type Value = Vec<Record<T>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let cx = self.cx;
        let max = cx.config.max_records;
        // The length hint is not trusted: it comes from the sender. The body's length is: no
        // record is shorter than `{"hash":"","fields":{}},`, so room for that many records
        // (and no more than allowed) is reserved once, and the vector never regrows, which would
        // briefly hold the old and the new buffer. Only when that reservation would cost more
        // than a few times the body (large record types) does the vector grow as usual.
        const SHORTEST_RECORD: usize = 24;
        let body = source_len();
        let bound = max.saturating_add(1).min(body / SHORTEST_RECORD + 1);
        let mut records = if bound.saturating_mul(size_of::<Record<T>>()) <= body.saturating_mul(3)
        {
            Vec::with_capacity(bound)
        } else {
            Vec::new()
        };
        loop {
            let index = records.len();
            if index == max {
                // Skim one more element without building it, to tell "exactly max" from "more".
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    cx.fail(FailureKind::TooManyRecords);
                    return Err(A::Error::custom(format_args!(
                        "the batch has more than {max} records"
                    )));
                }
                records.shrink_to_fit();
                return Ok(records);
            }
            match cx.at(
                Segment::Index(index),
                seq.next_element_seed(RecordSeed::new(cx)),
            )? {
                Some(record) => records.push(record),
                None => {
                    records.shrink_to_fit();
                    return Ok(records);
                }
            }
        }
    }
}

/// Deserializes one record (`{"hash":…,"fields":…}`).
struct RecordSeed<'a, 'c, T> {
    cx: &'a Context<'c>,
    marker: PhantomData<fn() -> T>,
}

impl<'a, 'c, T> RecordSeed<'a, 'c, T> {
    fn new(cx: &'a Context<'c>) -> Self {
        Self {
            cx,
            marker: PhantomData,
        }
    }
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for RecordSeed<'_, '_, T> {
    type Value = Record<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for RecordSeed<'_, '_, T> {
    type Value = Record<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record with `hash` and `fields`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const KEYS: &[&str] = &["hash", "fields"];
        let cx = self.cx;
        let mut hash: Option<RecordHash> = None;
        let mut fields: Option<T> = None;
        while let Some(key) = map.next_key_seed(KeySeed(KEYS))? {
            match key {
                Some(0) => {
                    if hash.is_some() {
                        return Err(A::Error::duplicate_field("hash"));
                    }
                    hash = Some(cx.at(Segment::Key("hash"), map.next_value())?);
                }
                Some(1) => {
                    if fields.is_some() {
                        return Err(A::Error::duplicate_field("fields"));
                    }
                    let seed = FieldsSeed {
                        cx,
                        marker: PhantomData,
                    };
                    fields = Some(cx.at(Segment::Key("fields"), map.next_value_seed(seed))?);
                }
                _ => {
                    map.next_value_seed(Skip(cx.room(IN_RECORD)))?;
                }
            }
        }
        Ok(Record::new(
            hash.ok_or_else(|| A::Error::missing_field("hash"))?,
            fields.ok_or_else(|| A::Error::missing_field("fields"))?,
        ))
    }
}

/// Deserializes a record's `fields` into `T`, after checking it is an object and, if
/// configured, normalising its keys.
struct FieldsSeed<'a, 'c, T> {
    cx: &'a Context<'c>,
    marker: PhantomData<fn() -> T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for FieldsSeed<'_, '_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        let cx = self.cx;
        if !cx.check_numbers {
            return self.read(deserializer);
        }
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        if let Some(name) = inexact_member(raw.get()) {
            cx.fail(FailureKind::InexactNumber(name.into_owned()));
            return Err(D::Error::custom("a number cannot be held exactly"));
        }
        let mut inner = serde_json::Deserializer::from_str(raw.get());
        self.read(&mut inner)
            .map_err(|error| D::Error::custom(strip_position(&error.to_string())))
    }
}

impl<'de, T: DeserializeOwned> FieldsSeed<'_, '_, T> {
    /// Reads the fields into `T`: checked to be an object, names normalised if configured,
    /// within the heap budget.
    fn read<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        let cx = self.cx;
        let is_object = Cell::new(false);
        let object = ObjectOnly {
            de: deserializer,
            is_object: &is_object,
        };
        let result = if cx.config.normalize_field_names {
            normalized_fields(cx, object)
        } else if cx.track_fields {
            let mut track = serde_path_to_error::Track::new();
            let tracked = serde_path_to_error::Deserializer::new(object, &mut track);
            let result = deserialize_within(tracked, &cx.budget, IN_RECORD);
            if result.is_err() && is_object.get() {
                cx.record_fields_failed(Some(track.path().to_string()));
            }
            result
        } else {
            deserialize_within(object, &cx.budget, IN_RECORD).inspect_err(|_| {
                if is_object.get() {
                    cx.record_fields_failed(None);
                }
            })
        };
        if result.is_err() && cx.budget.exceeded() {
            cx.fail(FailureKind::HeapBudget);
        }
        result
    }
}

/// The fields with their names normalised (see [`EventConfig::normalize_field_names`]): read
/// as a map, renamed, rendered back to text, then read as `T` as a delivery would be.
fn normalized_fields<'de, T: DeserializeOwned, D: Deserializer<'de>>(
    cx: &Context<'_>,
    object: D,
) -> Result<T, D::Error> {
    let fields: Map<String, Value> = deserialize_within(object, &cx.budget, IN_RECORD)?;
    let fields = normalize_fields(fields).map_err(|collision| {
        let error = D::Error::custom(format_args!(
            "the field names `{}` and `{}` both normalise to `{}`",
            collision.first, collision.second, collision.normalized
        ));
        cx.fail(FailureKind::Collision(collision));
        error
    })?;
    let text = Value::Object(fields).to_string();
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let result = if cx.track_fields {
        let mut track = serde_path_to_error::Track::new();
        let tracked = serde_path_to_error::Deserializer::new(&mut deserializer, &mut track);
        deserialize_within(tracked, &cx.budget, IN_RECORD)
            .inspect_err(|_| cx.record_fields_failed(Some(track.path().to_string())))
    } else {
        deserialize_within(&mut deserializer, &cx.budget, IN_RECORD)
            .inspect_err(|_| cx.record_fields_failed(None))
    };
    result.map_err(|error| D::Error::custom(strip_position(&error.to_string())))
}

/// Identifies a map key by its position in a list of known keys (`None` for others), without
/// allocating.
struct KeySeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|known| *known == key))
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|known| known.as_bytes() == key))
    }
}

/// A deserializer that offers its input to `T` only if it is a JSON object, whatever `T` asks
/// for: Polytomic's `fields` is always an object, and a `T` that would also accept a string or
/// an array must not make a malformed envelope look valid. Sets `is_object` once the object is
/// handed over, so errors after that point are `T`'s.
struct ObjectOnly<'a, D> {
    de: D,
    is_object: &'a Cell<bool>,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_any(ObjectVisitor {
            inner: visitor,
            is_object: self.is_object,
            as_enum: false,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        if is_raw_text(name) {
            // Raw text ([`RawFields`], `Box<RawValue>`) reads the deserializer underneath and
            // checks its own shape.
            return self.de.deserialize_newtype_struct(name, visitor);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de.deserialize_any(ObjectVisitor {
            inner: visitor,
            is_object: self.is_object,
            as_enum: true,
        })
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct ObjectVisitor<'a, V> {
    inner: V,
    is_object: &'a Cell<bool>,
    as_enum: bool,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ObjectVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.is_object.set(true);
        let map = UniqueNames {
            map,
            names: Names::default(),
        };
        if self.as_enum {
            // An externally tagged enum written as `{"Variant": …}`.
            self.inner.visit_enum(MapAccessDeserializer::new(map))
        } else {
            self.inner.visit_map(map)
        }
    }
}

/// A record's fields as `T` sees them, with every member name checked to appear once: a name
/// given twice would otherwise be silently resolved by `T` (a map keeps the last value).
struct UniqueNames<'de, A> {
    map: A,
    names: Names<'de>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for UniqueNames<'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(name) = self.map.next_key_seed(NameSeed)? else {
            return match std::mem::take(&mut self.names).finish() {
                Ok(()) => Ok(None),
                Err(name) => Err(duplicate_error(&name)),
            };
        };
        if let Err(name) = self.names.insert(name.clone()) {
            return Err(duplicate_error(&name));
        }
        match name {
            Cow::Borrowed(name) => seed.deserialize(BorrowedStrDeserializer::new(name)),
            Cow::Owned(name) => seed.deserialize(StringDeserializer::new(name)),
        }
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for PolytomicEvent<T> {
    /// Deserializes a delivery with [`EventConfig::default()`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = EventConfig::default();
        EnvelopeSeed::new(&Context::new(&config, false)).deserialize(deserializer)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for SyncRecords<T> {
    /// Deserializes the `object` of a `sync.records` delivery (the shape `Serialize` writes)
    /// with [`EventConfig::default()`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = EventConfig::default();
        BatchSeed::new(&Context::new(&config, false)).deserialize(deserializer)
    }
}
