//! Durable, idempotent storage of Polytomic `sync.records` batches.
//!
//! Polytomic marks a sync failed when a delivery is not answered 2xx, and re-sends records on
//! re-runs, full syncs and backfills. A receiver therefore has to keep a batch *before* it
//! answers 200, and has to recognise records it already kept. A [`Sink`] does both:
//!
//! - **Identity.** A record is identified by its sync id and the value of a configured key
//!   field ([`Identity::key_field`]). Without a key field, or for a record that lacks it (or
//!   has it `null`), the record's `hash` stands in for the key.
//! - **Unchanged.** A record whose hash equals the last hash stored for its identity is not
//!   stored again; any other record is stored and becomes its identity's last hash. Keeping
//!   the *last* hash (not every hash ever seen) is what lets a record that changes A → B → A
//!   be stored three times.
//! - **Last in the batch.** Within one batch, the records of one identity (a key that is not
//!   unique in the source, a record updated twice in one run) collapse to the last of them:
//!   only that one is compared and stored, and the earlier ones are counted as superseded.
//!   So a batch delivered again as it was stores nothing, whatever it holds.
//! - **Atomicity.** The records of one batch and their identities' last hashes are written in
//!   one atomic step: a retried batch never stores a record twice, and a batch whose store
//!   returned `Ok` is not lost when the process dies afterwards.
//!
//! Three sinks implement it: [`MemorySink`] (tests), `SqliteSink` (feature `sqlite`, the
//! default: one file on one machine) and `RedisSink` (feature `redis`: state shared by any
//! number of replicas). [`store`] runs a sink for a handler and gives the answer:
//! 200 `{"accepted":N,"stored":S,"unchanged":U,"superseded":P}`, or 503 `sink_unavailable`
//! when the sink failed, so Polytomic never sees a 2xx for a batch that was not kept.
//! [`StoreService`] is the same as a ready tower service.
//!
//! The crate also has two stores for the organisation-event ids of `polytomic_webhook::dedup`:
//! `SqliteEventIdStore` (feature `sqlite`: one file of its own, so that a receiver recognises
//! a handled event after it restarts) and `RedisEventIdStore` (feature `redis`: shared, so
//! that replicas handle each event once between them). Both pass the shared suite of
//! `polytomic_webhook::testing::event_ids`.
//!
//! For a receiver that writes lines instead of storing records, [`lines`] writes each batch as
//! one compact JSON line and appends it so that every acknowledged line stays readable: a line
//! a full disk or a killed process left partial is cut off (or, on a pipe, the next line starts
//! on a fresh line).
//!
//! ```
//! use polytomic_webhook_event::{EventConfig, parse_sync_records};
//! use polytomic_webhook_store::{Identity, MemorySink, Sink};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let sink = MemorySink::new(Identity::key_field("id"));
//! let body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
//!     "name":"Users","records":[{"hash":"a1","fields":{"id":7,"email":"a@example.com"}}]}}"#;
//! let batch = parse_sync_records(body, &EventConfig::default()).unwrap();
//! let first = sink.store(&batch).await.unwrap();
//! assert_eq!((first.stored, first.unchanged), (1, 0));
//! let again = sink.store(&batch).await.unwrap(); // a redelivery
//! assert_eq!((again.stored, again.unchanged), (0, 1));
//! # });
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The crate's README, shown on crates.io: its snippets (a SQLite sink, the Redis event-id
// store) are compiled here, with the features they name.
#[cfg(all(doctest, feature = "sqlite", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::Arc;

/// What [`Sink::store`] did with a batch (defined beside `Ack`, so that the webhook layer's
/// metrics can read it off the answer).
pub use polytomic_webhook_event::Stored;
use polytomic_webhook_event::{RawJson, Record, SyncRecords};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

#[cfg(feature = "redis")]
mod event_ids;
pub mod lines;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod service;
#[cfg(feature = "sqlite")]
mod sqlite;
mod url;

#[cfg(feature = "redis")]
pub use event_ids::{DEFAULT_EVENT_PREFIX, RedisEventIdStore};
pub use memory::MemorySink;
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_STREAM, RedisSink};
pub use service::{SinkUnavailable, StoreAck, StoreService, store};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteEventIdStore, SqliteSink};
pub use url::{SinkUrl, SinkUrlError};

/// The future a [`Sink`] method returns: boxed, so that sinks can be chosen at run time
/// (`Arc<dyn Sink>`).
pub type SinkFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SinkError>> + Send + 'a>>;

/// Somewhere validated batches are kept, each record once per change.
///
/// See the [crate docs](crate) for identity, "unchanged" and atomicity; every implementation
/// here passes the same test suite for them.
pub trait Sink: Send + Sync + 'static {
    /// Stores the records of `batch` that changed (of each identity, the batch's last record),
    /// in one atomic step, and says how many were stored, unchanged and superseded. `Err`
    /// means nothing of the batch was kept.
    fn store<'a>(&'a self, batch: &'a SyncRecords) -> SinkFuture<'a, Stored>;

    /// A cheap check that the sink can be reached now (a health endpoint's question).
    fn ready(&self) -> SinkFuture<'_, ()>;

    /// Every stored record, in the order it was stored.
    fn records(&self) -> SinkFuture<'_, Vec<StoredRecord>>;

    /// The same records as [`records`](Self::records), in the same order, read a page at a
    /// time, so that reading a large sink (`dump`) takes memory for a page, not for the sink.
    /// The provided method gives what `records` gives as one page; the SQLite and Redis sinks
    /// page through what they hold.
    fn record_stream(&self) -> RecordStream<'_> {
        RecordStream::new(self.records())
    }
}

/// Stored records in store order, as [`Sink::record_stream`] gives them: a page is read when
/// the one before it has been taken.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, parse_sync_records};
/// use polytomic_webhook_store::{Identity, MemorySink, Sink};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let sink = MemorySink::new(Identity::hash());
/// let body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
///     "name":"Users","records":[{"hash":"a1","fields":{"id":7}}]}}"#;
/// sink.store(&parse_sync_records(body, &EventConfig::default()).unwrap()).await.unwrap();
/// let mut records = sink.record_stream();
/// while let Some(record) = records.next().await {
///     assert_eq!(record.unwrap().hash, "a1");
/// }
/// # });
/// ```
pub struct RecordStream<'a> {
    pages: Box<dyn Pages + 'a>,
    page: std::vec::IntoIter<StoredRecord>,
    ended: bool,
}

/// Where a [`RecordStream`]'s pages come from: `Ok(None)` once there are no more.
pub(crate) trait Pages: Send {
    fn next_page(&mut self) -> SinkFuture<'_, Option<Vec<StoredRecord>>>;
}

/// The provided [`Sink::record_stream`]'s source: one page, every record at once.
struct OnePage<'a>(Option<SinkFuture<'a, Vec<StoredRecord>>>);

impl Pages for OnePage<'_> {
    fn next_page(&mut self) -> SinkFuture<'_, Option<Vec<StoredRecord>>> {
        let records = self.0.take();
        Box::pin(async move {
            match records {
                Some(records) => records.await.map(Some),
                None => Ok(None),
            }
        })
    }
}

impl<'a> RecordStream<'a> {
    /// A stream of one page: every record `records` gives.
    pub fn new(records: SinkFuture<'a, Vec<StoredRecord>>) -> Self {
        Self::from_pages(OnePage(Some(records)))
    }

    #[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
    pub(crate) fn from_pages(pages: impl Pages + 'a) -> Self {
        Self {
            pages: Box::new(pages),
            page: Vec::new().into_iter(),
            ended: false,
        }
    }

    /// The next record, `None` once every record was given; after an error, there is none.
    pub async fn next(&mut self) -> Option<Result<StoredRecord, SinkError>> {
        loop {
            if let Some(record) = self.page.next() {
                return Some(Ok(record));
            }
            if self.ended {
                return None;
            }
            match self.pages.next_page().await {
                Ok(Some(page)) => self.page = page.into_iter(),
                Ok(None) => self.ended = true,
                Err(error) => {
                    self.ended = true;
                    return Some(Err(error));
                }
            }
        }
    }

    /// Every record left, in one `Vec`.
    pub async fn collect(mut self) -> Result<Vec<StoredRecord>, SinkError> {
        let mut records = Vec::new();
        while let Some(record) = self.next().await {
            records.push(record?);
        }
        Ok(records)
    }
}

impl fmt::Debug for RecordStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordStream")
            .field("in_page", &self.page.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// Why a sink could not store a batch.
///
/// The message names the storage operation that failed and the backend's own error; it never
/// carries a record's value or a connection's password (sinks build it from errors that have
/// neither).
#[derive(Clone)]
pub struct SinkError {
    message: Arc<str>,
}

impl SinkError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string().into(),
        }
    }

    /// `what` failed because of `cause`.
    #[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
    pub(crate) fn from_cause(what: &str, cause: impl fmt::Display) -> Self {
        Self::new(format_args!("{what}: {cause}"))
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SinkError").field(&self.message).finish()
    }
}

impl std::error::Error for SinkError {}

/// When a stored batch is on disk for good (what `SqliteSink` promises; Redis's own
/// persistence settings decide for Redis).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A batch acknowledged survives the process crashing or being killed; the last batches
    /// before a power loss or an operating-system crash may be lost (the file stays
    /// consistent). SQLite: WAL with `synchronous=NORMAL`, no fsync per batch.
    #[default]
    Process,
    /// Each batch is on disk before it is acknowledged, so it survives a power loss too, at
    /// the cost of one fsync per commit (SQLite commits the batches waiting together). SQLite:
    /// WAL with `synchronous=FULL`.
    PowerLoss,
}

/// How a record's identity is found: by a key field, or by its hash.
///
/// The key is the field value's JSON text as received, so `1` and `"1"` are different keys,
/// and so are `1.0` and `1`. A record that lacks the field, or has it `null`, is identified by
/// its hash instead.
///
/// ```
/// use polytomic_webhook_event::{Record, RecordHash};
/// use polytomic_webhook_store::Identity;
///
/// let record = Record::new(RecordHash::new("h"), r#"{"id":"1"}"#.parse().unwrap());
/// assert_eq!(Identity::key_field("id").key(&record), Some(r#""1""#));
/// assert_eq!(Identity::key_field("email").key(&record), None);
/// assert_eq!(Identity::hash().key(&record), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    key_field: Option<Arc<str>>,
}

impl Identity {
    /// Records are identified by their hash alone: a redelivered record is recognised, a
    /// changed record is a new one.
    pub fn hash() -> Self {
        Self::default()
    }

    /// Records are identified by the value of the top-level field `name`.
    pub fn key_field(name: impl Into<Arc<str>>) -> Self {
        Self {
            key_field: Some(name.into()),
        }
    }

    /// The configured key field, if any.
    pub fn field(&self) -> Option<&str> {
        self.key_field.as_deref()
    }

    /// The record's key: the key field's JSON text, or `None` when the hash identifies it.
    pub fn key<'r>(&self, record: &'r Record) -> Option<&'r str> {
        let value = record.fields().get(self.key_field.as_deref()?)?.get();
        (value != "null").then_some(value)
    }

    /// A record as [`latest_of_each`] takes it from the sinks that keep no fingerprints: its
    /// identity within its sync, borrowed (its key, or its hash when it has none), and itself.
    pub(crate) fn borrowed<'r>(
        &self,
        record: &'r Record,
    ) -> ((Option<&'r str>, &'r str), &'r Record) {
        let key = self.key(record);
        ((key, key.map_or(record.hash().as_str(), |_| "")), record)
    }

    /// A record's identity within its sync as one string, from its [`key`](Self::key): the
    /// key, or the hash behind a `#` (which no JSON text starts with, so the two kinds never
    /// collide).
    pub(crate) fn of(key: Option<&str>, record: &Record) -> String {
        match key {
            Some(key) => key.to_owned(),
            None => format!("#{}", record.hash()),
        }
    }
}

/// The last record of each identity among `records` (a batch's, in order, each as its
/// identity and what the sink needs of it), in batch order; the others are superseded.
///
/// Only the last is compared with the stored state, so a batch naming one identity twice
/// stores one record, and stores nothing when delivered again: comparing each in turn would
/// store the first again, since it differs from the last hash the batch itself left.
pub(crate) fn latest_of_each<I, T, S>(
    records: impl DoubleEndedIterator<Item = (I, T)> + ExactSizeIterator,
    hasher: S,
) -> Vec<(I, T)>
where
    I: Hash + Eq + Copy,
    S: BuildHasher,
{
    if records.len() < 2 {
        // Nothing to supersede: no set to build (deliveries of one record are common).
        return records.collect();
    }
    let mut latest = Vec::with_capacity(records.len());
    let mut seen = HashSet::with_capacity_and_hasher(records.len(), hasher);
    for (identity, record) in records.rev() {
        if seen.insert(identity) {
            latest.push((identity, record));
        }
    }
    latest.reverse();
    latest
}

/// One stored record, as [`Sink::records`] gives it back.
///
/// It serializes as the line `dump` prints:
/// `{"sync_id":…,"sync_name":…,"key":…,"hash":…,"fields":{…}}`, where `key` is the key
/// field's JSON value (`null` when the hash identified the record) and `fields` the record's
/// fields as received but compact: strings and numbers byte for byte, without the whitespace
/// between tokens, so the line is one line whatever the sender's indentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The sync the record came from.
    pub sync_id: String,
    /// The sync's name in the delivery that stored it.
    pub sync_name: String,
    /// The key field's JSON text, or `None` when the hash identified the record.
    pub key: Option<String>,
    /// The record's hash.
    pub hash: String,
    /// The record's fields: JSON object text, as received.
    pub fields: String,
}

impl StoredRecord {
    /// The record of `batch`, as a sink stores it.
    pub(crate) fn new(batch: &SyncRecords, record: &Record, key: Option<&str>) -> Self {
        Self {
            sync_id: batch.id().as_str().to_owned(),
            sync_name: batch.name().to_owned(),
            key: key.map(str::to_owned),
            hash: record.hash().as_str().to_owned(),
            fields: record.fields().as_str().to_owned(),
        }
    }
}

impl Serialize for StoredRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Compact, so an indented record is still one `dump` line; what the sink holds stays
        // as received.
        fn raw<E: serde::ser::Error>(text: &str) -> Result<Box<RawValue>, E> {
            let json: RawJson = text.parse().map_err(E::custom)?;
            RawValue::from_string(json.compact().into_owned()).map_err(E::custom)
        }
        let mut line = serializer.serialize_struct("StoredRecord", 5)?;
        line.serialize_field("sync_id", &self.sync_id)?;
        line.serialize_field("sync_name", &self.sync_name)?;
        line.serialize_field(
            "key",
            &self.key.as_deref().map(raw::<S::Error>).transpose()?,
        )?;
        line.serialize_field("hash", &self.hash)?;
        line.serialize_field("fields", &raw::<S::Error>(&self.fields)?)?;
        line.end()
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_stored_record_serializes_as_the_dump_line_with_key_and_fields_verbatim() {
        let record = |key: Option<&str>| StoredRecord {
            sync_id: "s".into(),
            sync_name: "n".into(),
            key: key.map(str::to_owned),
            hash: "h".into(),
            fields: r#"{"id":"1","big":123456789012345678901234567890}"#.into(),
        };
        assert_eq!(
            serde_json::to_string(&record(Some(r#""1""#))).unwrap(),
            r#"{"sync_id":"s","sync_name":"n","key":"1","hash":"h","fields":{"id":"1","big":123456789012345678901234567890}}"#
        );
        assert!(
            serde_json::to_string(&record(Some("1")))
                .unwrap()
                .contains(r#""key":1,"#)
        );
        assert!(
            serde_json::to_string(&record(None))
                .unwrap()
                .contains(r#""key":null,"#)
        );
    }
}
