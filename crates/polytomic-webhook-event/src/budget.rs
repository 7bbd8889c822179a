//! A heap budget for what deserializing a batch builds.
//!
//! A record type such as [`Fields`](crate::Fields) (`serde_json::Map<String, Value>`) turns a
//! small body into a large tree: `{"":0}` is seven bytes of JSON but a whole `BTreeMap` node
//! (over 600 bytes) in the heap, so a body limit alone lets a hostile body cost about a hundred
//! times its size. [`deserialize_within`] runs any `Deserialize` type through an adapter that
//! estimates, node by node, what an owning target (`Value`, `Map`, `Vec`, `String`) allocates,
//! and charges it to a [`Budget`] shared by the whole batch. A charge that does not fit fails
//! the parse with a `serde` error and marks the budget [exceeded](Budget::exceeded), which the
//! caller answers with 413 `body_too_large` (`limit: heap`).
//!
//! What is charged, always before the allocation it stands for:
//!
//! - a string, byte string or `char` (keys included): its length as a heap block
//!   ([`block`]), whether or not the target copies it;
//! - a map: one `BTreeMap` node ([`MAP_NODE`]) for its first entry and for every
//!   [`ENTRIES_PER_NODE`] entries after that, when each key has been read and before its value;
//! - a sequence: room for [`SEQ_SLOTS_EACH`] `Value`s per element, more for the first, when
//!   the element has been read and before it is pushed.
//!
//! Numbers, booleans and `null` live inside the slot their container already paid for, and
//! cost nothing. The estimates are conservative: each is at least what `serde_json`'s `Value`
//! takes in the worst case (measured in `tests/budget_heap.rs`), and typed records, which build
//! less, are charged the same. The adapter keeps its state on the stack; a charge is one
//! `Cell` update.
//!
//! The adapter also counts how deep it is, the objects and arrays around the value it reads
//! from the body's top (serde_json counts too, but only to its own limit, and not at all in what
//! it skims). An object or array past [`EventConfig::max_depth`](crate::EventConfig::max_depth)
//! fails the parse as it opens; a value the target skips (`IgnoredAny`) or keeps as raw text is
//! scanned for its nesting by the reader that crosses its text.
//!
//! For scale: an ordinary record of 13 fields, about 335 bytes of JSON, is charged about
//! 3.8 KB (11x its text) and really takes about 2.3 KB as counted by the allocator, before
//! malloc's own overhead; the hostile `{"":0}` element is charged 832 bytes for its 8.

use std::cell::Cell;
use std::fmt;
use std::mem::size_of;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde_json::Value;

/// The deepest nesting serde_json builds: its recursion limit of 128 refuses the 128th object
/// or array open at once. [`EventConfig::max_depth`](crate::EventConfig::max_depth) can lower it
/// for every record type, not raise it.
pub(crate) const MAX_DEPTH: usize = 127;

/// The error message of nesting past the depth limit; the slow path finds where it is.
pub(crate) const TOO_DEEP: &str = "objects and arrays are nested deeper than the limit";

/// The error for nesting past the depth limit.
pub(crate) fn too_deep_error<E: de::Error>() -> E {
    E::custom(TOO_DEEP)
}

thread_local! {
    /// How many levels of objects and arrays the raw value read next may hold, its own
    /// included: what the depth limit leaves below where it sits. The readers of raw text
    /// (`RawFields`, `RawJson`) check it while they scan that text anyway; outside a parse it is
    /// serde_json's own limit.
    static ROOM: Cell<usize> = const { Cell::new(MAX_DEPTH) };
}

/// Sets the room of the raw values read while it lives (see [`ROOM`]), and restores the
/// previous room when dropped.
pub(crate) struct RoomGuard {
    previous: usize,
}

impl RoomGuard {
    pub(crate) fn enter(room: usize) -> Self {
        Self {
            previous: ROOM.replace(room),
        }
    }
}

impl Drop for RoomGuard {
    fn drop(&mut self) {
        ROOM.set(self.previous);
    }
}

/// The room of the raw value being read (see [`ROOM`]).
pub(crate) fn room() -> usize {
    ROOM.get()
}

/// Checks the text of a value the target skipped against the room left where it sits; `top`
/// when it is the record's `fields` themselves, which must still be an object.
pub(crate) type SkippedCheck = fn(text: &str, room: usize, top: bool) -> Result<(), String>;

/// The newtype name through which serde_json hands out raw text (`&RawValue`, which `RawFields`
/// reads); stable since serde_json 1.0.29, and exercised by every test of `RawFields`.
pub(crate) const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Whether a newtype of this name is raw text: a view of the body, nothing built, and read by the
/// deserializer underneath any adapter.
pub(crate) fn is_raw_text(name: &str) -> bool {
    name == RAW_VALUE_TOKEN
}

/// Reads a value's raw text as `&'de RawValue` does (serde_json hands it to this visitor as a
/// one-member map, under [`RAW_VALUE_TOKEN`]), and checks it
/// with `F` while still inside the call: the room a reader above set for it (see `ROOM`) is
/// only in force until the call returns.
/// The text may also come owned (from a `serde_json::Value`, or a reader), and is then copied
/// by whoever keeps it.
pub(crate) struct RawText<F>(pub(crate) F);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for RawText<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        if map.next_key::<de::IgnoredAny>()?.is_none() {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        map.next_value_seed(TextSeed(self.0))
    }
}

/// The string serde_json hands a [`RawText`] as the map's value, given to `F`.
struct TextSeed<F>(F);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> DeserializeSeed<'de> for TextSeed<F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for TextSeed<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the raw text of a JSON value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.0)(text).map_err(E::custom)
    }
}

/// Skips one value, checking its text with `F` where the deserializer can give it (serde_json,
/// and its `Value`); other formats skip it unchecked, as they did nothing of JSON's nesting.
pub(crate) struct SkipText<F>(pub(crate) F);

impl<'de, F: FnOnce(&str) -> Result<(), String>> Visitor<'de> for SkipText<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        RawText(self.0).visit_map(map)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        de::IgnoredAny::deserialize(deserializer).map(|_| ())
    }
}

/// The heap a `BTreeMap<String, Value>` node takes: an internal node, the larger kind (a leaf is
/// 632 bytes), as `peak_alloc` counts it on 64-bit targets. `tests/budget_heap.rs` checks it
/// against real maps.
pub(crate) const MAP_NODE: usize = 728;

/// A `BTreeMap` node other than the root holds at least this many entries whatever the order
/// of insertion, so one node per this many entries (and one for the first) bounds the tree.
pub(crate) const ENTRIES_PER_NODE: usize = 5;

/// `Value`s of room charged per sequence element: a `Vec` that grows by doubling holds at most
/// twice its length, and while it moves to a larger buffer both buffers exist.
pub(crate) const SEQ_SLOTS_EACH: usize = 3;

/// The smallest buffer a `Vec<Value>` allocates, charged with its first element.
pub(crate) const SEQ_SLOTS_FIRST: usize = 4;

/// The budget of one batch unless configured otherwise. Ten thousand ordinary records (3.3 MB
/// of JSON, charged 38 MB) fit it more than four times over; a body of hostile shape, which
/// builds about a hundred times its size, stops at 256 MiB rather than the 3 GiB or so that the
/// default 32 MiB body limit alone allows.
pub(crate) const DEFAULT_LIMIT: usize = 256 * 1024 * 1024;

const VALUE: usize = size_of::<Value>();

/// What the allocator takes for `len` bytes: nothing for an empty string or buffer (they do not
/// allocate), else `len` plus a header rounded up to 16 bytes, at least 32, as glibc's malloc
/// does on 64-bit targets. Many small strings cost more than their length; this counts that.
pub(crate) const fn block(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let rounded = len.saturating_add(8 + 15) & !15;
    if rounded < 32 { 32 } else { rounded }
}

const MAP_NODE_BLOCK: usize = block(MAP_NODE);
const SEQ_FIRST_BLOCK: usize = block(SEQ_SLOTS_FIRST * VALUE);
const SEQ_EACH: usize = SEQ_SLOTS_EACH * VALUE;

/// The heap one parse (one batch) may still build, in estimated bytes.
///
/// Shared by reference between every record of the batch; not `Sync`, as a parse runs on one
/// thread.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    remaining: Cell<usize>,
    exceeded: Cell<bool>,
    /// Whether a float was built, and whether one came out zero or subnormal (see `numbers`).
    floats: Cell<Floats>,
    /// The most objects and arrays open at once, counted from the body's top.
    max_depth: usize,
    skipped: SkippedCheck,
    /// The objects and arrays open around the value being read, from the body's top; kept here
    /// rather than in each adapter, so that only opening and closing one costs anything.
    depth: Cell<usize>,
    /// `depth` at the record type's own value (a record's `fields`).
    top: Cell<usize>,
}

/// The floats a parse built, for the exact-number check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Floats {
    #[default]
    None,
    Some,
    /// At least one was zero or subnormal, which an exponent out of range can also produce.
    Tiny,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            remaining: Cell::new(limit),
            exceeded: Cell::new(false),
            floats: Cell::new(Floats::None),
            max_depth: MAX_DEPTH,
            skipped: |_, _, _| Ok(()),
            depth: Cell::new(0),
            top: Cell::new(0),
        }
    }

    /// The budget with at most `max_depth` objects and arrays open at once (no more than
    /// serde_json's own limit), values the target skips checked by `skipped`. (Without, only
    /// what is built is counted: the module is also compiled alone, into a test, without the
    /// scans of raw text.)
    pub(crate) fn with_depth(mut self, max_depth: usize, skipped: SkippedCheck) -> Self {
        self.max_depth = max_depth.min(MAX_DEPTH);
        self.skipped = skipped;
        self
    }

    /// How many levels the value being read may still open.
    fn room(&self) -> usize {
        self.max_depth.saturating_sub(self.depth.get())
    }

    /// Runs `read` inside one more object or array, failed before it starts past the limit.
    #[inline]
    fn nested<T, E: de::Error>(&self, read: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let depth = self.depth.get();
        if depth >= self.max_depth {
            return Err(too_deep_error());
        }
        self.depth.set(depth + 1);
        let result = read();
        self.depth.set(depth);
        result
    }

    /// The floats built so far.
    pub(crate) fn floats(&self) -> Floats {
        self.floats.get()
    }

    /// Whether a charge did not fit: the parse failed for this budget, whatever its error says.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.get()
    }

    /// The bytes charged so far (all of them once exceeded).
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.limit - self.remaining.get()
    }

    /// Charges `bytes`, or fails (and stays failed: every later charge fails too, so an error
    /// that a target swallows cannot let the parse carry on past the budget).
    pub(crate) fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        if let Some(remaining) = self.remaining.get().checked_sub(bytes) {
            self.remaining.set(remaining);
            return Ok(());
        }
        self.exceeded.set(true);
        self.remaining.set(0);
        Err(E::custom(format_args!(
            "the batch would take more than its heap budget of {} bytes",
            self.limit
        )))
    }
}

/// Deserializes `T` from `deserializer`, which reads a value inside `depth` objects and arrays
/// of the body, charging `budget` for what it builds and refusing nesting past its depth limit
/// (see the module documentation). Apart from that, `T` sees exactly what `deserializer`
/// produces.
pub(crate) fn deserialize_within<'de, T, D>(
    deserializer: D,
    budget: &Budget,
    depth: usize,
) -> Result<T, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    budget.depth.set(depth);
    budget.top.set(depth);
    T::deserialize(Charged::new(deserializer, budget))
}

/// The adapter. Wrapping a deserializer, a visitor, a seed or an enum accessor, it forwards
/// every call to `inner` and wraps whatever that call hands on, so the whole tree below goes
/// through it; the visitor side is where strings are charged.
struct Charged<'b, X> {
    inner: X,
    budget: &'b Budget,
}

impl<'b, X> Charged<'b, X> {
    fn new(inner: X, budget: &'b Budget) -> Self {
        Self { inner, budget }
    }

    fn note_float(&self, value: f64) {
        let tiny = value == 0.0 || !value.is_normal();
        let floats = &self.budget.floats;
        if tiny {
            floats.set(Floats::Tiny);
        } else if floats.get() == Floats::None {
            floats.set(Floats::Some);
        }
    }

    fn wrap<Y>(&self, inner: Y) -> Charged<'b, Y> {
        Charged::new(inner, self.budget)
    }
}

/// Forwards `deserialize_*` methods with the visitor wrapped.
macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V)
                -> Result<V::Value, D::Error>
            {
                let visitor = self.wrap(visitor);
                self.inner.$method($($arg,)* visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Charged<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        if is_raw_text(name) {
            // Raw text (`RawFields`) is a view of the body: nothing is built. Its reader checks
            // its nesting against the room left here, while it scans the text anyway.
            let _room = RoomGuard::enter(self.budget.room());
            return self.inner.deserialize_newtype_struct(name, visitor);
        }
        let visitor = self.wrap(visitor);
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    // A skipped value builds nothing, so nothing below it is charged; serde_json skims it
    // without counting its depth, so its text is scanned for that.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let budget = self.budget;
        let (check, room) = (budget.skipped, budget.room());
        let top = budget.depth.get() == budget.top.get();
        // The fields themselves (`top`) must still be an object with every name once.
        self.inner.deserialize_newtype_struct(
            RAW_VALUE_TOKEN,
            SkipText(|text: &str| check(text, room, top)),
        )?;
        // What serde_json's own `deserialize_ignored_any` hands the visitor.
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Forwards `visit_*` methods that build nothing on the heap.
macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

/// Forwards `visit_*` methods whose value the target may copy to the heap, charging its length.
macro_rules! charge_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.budget.charge(block(v.len()))?;
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Charged<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<V::Value, E> {
        self.note_float(f64::from(v));
        self.inner.visit_f32(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.note_float(v);
        self.inner.visit_f64(v)
    }

    charge_visit! {
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<V::Value, E> {
        self.budget.charge(block(v.len_utf8()))?;
        self.inner.visit_char(v)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let deserializer = self.wrap(deserializer);
        self.inner.visit_some(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        let deserializer = self.wrap(deserializer);
        self.inner.visit_newtype_struct(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let budget = self.budget;
        budget.nested(|| {
            self.inner.visit_seq(ChargedSeq {
                inner: seq,
                budget,
                started: false,
            })
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let budget = self.budget;
        budget.nested(|| {
            self.inner.visit_map(ChargedMap {
                inner: map,
                budget,
                room: 0,
            })
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        // `{"Variant": value}`, an object as serde_json counts it. (A unit variant written as
        // a string is counted as one too, which matters only at the deepest level allowed.)
        let data = self.wrap(data);
        self.budget.nested(|| self.inner.visit_enum(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Charged<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        let deserializer = self.wrap(deserializer);
        self.inner.deserialize(deserializer)
    }
}

impl<'de, 'b, A: EnumAccess<'de>> EnumAccess<'de> for Charged<'b, A> {
    type Error = A::Error;
    type Variant = Charged<'b, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let budget = self.budget;
        let (value, variant) = self.inner.variant_seed(Charged::new(seed, budget))?;
        Ok((value, Charged::new(variant, budget)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Charged<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}

/// A sequence whose elements are charged their slot in the target `Vec`.
struct ChargedSeq<'b, A> {
    inner: A,
    budget: &'b Budget,
    started: bool,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for ChargedSeq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let element = self
            .inner
            .next_element_seed(Charged::new(seed, self.budget))?;
        if element.is_some() {
            let bytes = if self.started {
                SEQ_EACH
            } else {
                self.started = true;
                SEQ_FIRST_BLOCK
            };
            self.budget.charge(bytes)?;
        }
        Ok(element)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A map whose entries are charged the `BTreeMap` nodes that hold them.
struct ChargedMap<'b, A> {
    inner: A,
    budget: &'b Budget,
    /// Entries that fit in the nodes charged so far.
    room: usize,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ChargedMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = self.inner.next_key_seed(Charged::new(seed, self.budget))?;
        if key.is_some() {
            if self.room == 0 {
                self.budget.charge(MAP_NODE_BLOCK)?;
                self.room = ENTRIES_PER_NODE;
            }
            self.room -= 1;
        }
        Ok(key)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(Charged::new(seed, self.budget))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::{Map, Value};

    use super::*;

    const PLENTY: usize = 1 << 30;

    /// Parses `json` as `T` within a budget of `limit` bytes.
    fn parse<'de, T: Deserialize<'de>>(
        json: &'de str,
        limit: usize,
    ) -> (Result<T, serde_json::Error>, Budget) {
        let budget = Budget::new(limit);
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let parsed = deserialize_within(&mut deserializer, &budget, 0).and_then(|value| {
            deserializer.end()?;
            Ok(value)
        });
        (parsed, budget)
    }

    const ORDINARY: &str = r#"{"id":100042,"email":"ada.lovelace42@example.com","first_name":"Ada",
        "escaped":"line\nbreak \u00e9","created_at":"2021-03-04T05:06:07Z","last_login":null,
        "seats":12,"lifetime_value":12345.67,"score":0.1,"delta":-3,"is_active":true,
        "tags":["vip","beta"],"address":{"city":"London","zip":"N1"},"empty":{},"none":[]}"#;

    #[test]
    fn ordinary_fields_within_the_budget_are_what_a_plain_parse_gives() {
        let plain: Map<String, Value> = serde_json::from_str(ORDINARY).unwrap();
        let (charged, budget) = parse::<Map<String, Value>>(ORDINARY, PLENTY);
        assert_eq!(charged.unwrap(), plain);
        assert!(!budget.exceeded());
        assert!(budget.used() > 0);
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Plan {
        Free,
        Seats(u32),
        Trial { days: u8 },
        Pair(String, i64),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Tagged {
        Person { name: String },
        Company,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Number(i64),
        Text(String),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Wrapper(u64);

    #[derive(Debug, PartialEq, Deserialize)]
    struct Typed<'a> {
        #[serde(borrow)]
        email: &'a str,
        raw: &'a [u8],
        owned: String,
        nickname: Option<String>,
        missing: Option<u8>,
        ch: char,
        small: i8,
        big: u128,
        ratio: f32,
        plans: Vec<Plan>,
        tagged: Vec<Tagged>,
        loose: Vec<Loose>,
        wrapper: Wrapper,
        nested: Vec<Vec<(u8, bool)>>,
        by_name: BTreeMap<String, Option<f64>>,
        unit: (),
        #[serde(flatten)]
        rest: Map<String, Value>,
    }

    const TYPED: &str = r#"{"email":"ada@example.com","raw":"bytes","owned":"tab\there","nickname":null,
        "ch":"é","small":-128,"big":340282366920938463463374607431768211455,"ratio":0.5,
        "plans":["free",{"seats":3},{"trial":{"days":14}},{"pair":["x",-1]}],
        "tagged":[{"kind":"person","name":"Ada"},{"kind":"company"}],
        "loose":[1,"one"],"wrapper":7,"nested":[[[1,true]],[],[[2,false],[3,true]]],
        "by_name":{"a":1.5,"b":null},"unit":null,"extra":{"deep":[1,{"x":"y"}]}}"#;

    #[test]
    fn typed_records_are_what_a_plain_parse_gives_and_borrow_where_it_lends() {
        let plain: Typed<'_> = serde_json::from_str(TYPED).unwrap();
        let (charged, budget) = parse::<Typed<'_>>(TYPED, PLENTY);
        let charged = charged.unwrap();
        assert_eq!(charged, plain);
        assert!(!budget.exceeded());
        // `email` and `raw` point into the input: what the parser lent, the adapter lent on.
        let input = TYPED.as_bytes().as_ptr_range();
        assert!(input.contains(&charged.email.as_ptr()));
        assert!(input.contains(&charged.raw.as_ptr()));
    }

    #[test]
    fn errors_of_the_target_pass_through_unchanged_and_do_not_count_as_the_budget() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)] // Only the errors matter.
        struct Ab {
            a: u8,
            b: u8,
        }
        for json in [r#"{"a":1,"b":"x"}"#, r#"{"a":1,"b":"#, r#"{"a":1,"a":2}"#] {
            let plain = serde_json::from_str::<Ab>(json).unwrap_err();
            let (charged, budget) = parse::<Ab>(json, PLENTY);
            assert_eq!(charged.unwrap_err().to_string(), plain.to_string());
            assert!(!budget.exceeded());
        }
    }

    #[test]
    fn strings_keys_map_nodes_and_sequence_slots_are_charged_before_the_value_is_built() {
        // One map node, the key "ab" and the value "xyz".
        let one_entry = MAP_NODE_BLOCK + block(2) + block(3);
        // One node per five entries: six entries take two.
        let six_entries = 2 * MAP_NODE_BLOCK + 6 * block(1);
        // A first element, then each further one.
        let three_elements = SEQ_FIRST_BLOCK + 2 * SEQ_EACH;
        for (json, cost) in [
            (r#"{"ab":"xyz"}"#, one_entry),
            (r#"{"a":0,"b":0,"c":0,"d":0,"e":0,"f":0}"#, six_entries),
            ("[true,1,null]", three_elements),
            (r#""""#, 0),
            ("{}", 0),
        ] {
            let (fits, budget) = parse::<Value>(json, cost);
            assert_eq!(fits.unwrap(), serde_json::from_str::<Value>(json).unwrap());
            assert_eq!(budget.used(), cost, "{json}");
            if cost > 0 {
                let (refused, budget) = parse::<Value>(json, cost - 1);
                let error = refused.unwrap_err();
                assert!(budget.exceeded(), "{json}");
                assert!(error.to_string().contains("heap budget"), "{error}");
            }
        }
    }

    #[test]
    fn the_error_names_the_budget_and_never_a_record_value() {
        let (refused, budget) = parse::<Value>(r#"{"secret":"hunter2hunter2"}"#, 100);
        let message = refused.unwrap_err().to_string();
        assert!(budget.exceeded());
        assert!(message.contains("heap budget of 100 bytes"), "{message}");
        assert!(
            !message.contains("hunter2") && !message.contains("secret"),
            "{message}"
        );
    }

    #[test]
    fn once_exceeded_every_later_charge_fails() {
        let budget = Budget::new(10);
        assert!(budget.charge::<serde_json::Error>(11).is_err());
        assert!(budget.exceeded());
        // 10 bytes would have fitted before; an error swallowed by a target cannot reopen it.
        assert!(budget.charge::<serde_json::Error>(1).is_err());
        assert!(budget.charge::<serde_json::Error>(0).is_ok());
    }

    #[test]
    fn skipped_members_are_not_charged() {
        #[derive(Deserialize)]
        struct OnlyId {
            id: u8,
        }
        let json = serde_json::json!({"id": 1, "skipped": {"big": vec!["x"; 1000]}}).to_string();
        let (parsed, budget) = parse::<OnlyId>(
            &json,
            MAP_NODE_BLOCK + block("id".len()) + block("skipped".len()),
        );
        assert_eq!(parsed.unwrap().id, 1);
        assert!(!budget.exceeded());
    }

    #[test]
    fn the_hostile_shape_is_refused_early() {
        let json = format!(r#"{{"a":[{}{{"":0}}]}}"#, r#"{"":0},"#.repeat(100_000));
        let limit = 1 << 20;
        let (refused, budget) = parse::<Map<String, Value>>(&json, limit);
        assert!(refused.is_err());
        assert!(budget.exceeded());
        // The error came at the element that no longer fitted: about 1 MiB / 800 bytes in.
        let column = refused.unwrap_err().column();
        let per_element = MAP_NODE_BLOCK + SEQ_EACH;
        assert!(column <= 8 * (limit / per_element) + 16, "{column}");
    }

    #[test]
    fn block_sizes_follow_the_allocator() {
        assert_eq!(block(0), 0);
        assert_eq!(block(1), 32);
        assert_eq!(block(24), 32);
        assert_eq!(block(25), 48);
        assert_eq!(block(MAP_NODE), 736);
        assert_eq!(block(usize::MAX), usize::MAX & !15);
    }
}
