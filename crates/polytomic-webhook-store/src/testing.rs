//! The behaviour every [`Sink`] must have, as one test suite (feature `testing`).
//!
//! Run it against a sink of your own with [`check_sink`]; this crate runs it against each of
//! its sinks.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // A failed unwrap is a failed test.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use polytomic_webhook_event::{Record, RecordHash, SyncId, SyncRecords};

use crate::{Identity, Sink, Stored, StoredRecord};

/// A sync id no other call in this process (nor, very likely, any other process) returns, so
/// that checks sharing one backend do not see each other's records.
pub fn fresh_sync_id() -> SyncId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() & u128::from(u64::MAX));
    let unique = u64::try_from(nanos).unwrap_or_default()
        ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(40);
    SyncId::parse(format!(
        "{:08x}-0000-4000-8000-{:012x}",
        std::process::id(),
        unique & 0xffff_ffff_ffff
    ))
    .unwrap()
}

/// A batch of `sync` with one record per `(hash, fields JSON)`.
pub fn batch(sync: &SyncId, records: &[(&str, &str)]) -> SyncRecords {
    let records = records
        .iter()
        .map(|(hash, fields)| Record::new(RecordHash::new(*hash), fields.parse().unwrap()))
        .collect();
    SyncRecords::new(sync.clone(), "suite", records)
}

fn counts(stored: usize, unchanged: usize, superseded: usize) -> Stored {
    Stored {
        stored,
        unchanged,
        superseded,
    }
}

/// The records `sink` holds for `sync`, as `(key, hash, fields)`, in store order.
async fn held(sink: &impl Sink, sync: &SyncId) -> Vec<(Option<String>, String, String)> {
    sink.records()
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.sync_id == sync.as_str())
        .map(|record| (record.key, record.hash, record.fields))
        .collect()
}

/// Checks identity, "unchanged", the collapse of one identity's records within a batch, key
/// handling and store order on sinks made by `open` (called
/// once per check, with the identity that check needs; sinks may share one backend).
pub async fn check_sink<S, F, Fut>(mut open: F)
where
    S: Sink,
    F: FnMut(Identity) -> Fut,
    Fut: Future<Output = S>,
{
    let by_hash = open(Identity::hash()).await;
    by_hash.ready().await.unwrap();
    let by_id = open(Identity::key_field("id")).await;

    // A redelivered batch is unchanged, record by record.
    let sync = fresh_sync_id();
    let first = batch(&sync, &[("h1", r#"{"n":1}"#), ("h2", r#"{"n":2}"#)]);
    assert_eq!(by_hash.store(&first).await.unwrap(), counts(2, 0, 0));
    assert_eq!(by_hash.store(&first).await.unwrap(), counts(0, 2, 0));
    assert_eq!(held(&by_hash, &sync).await.len(), 2);

    // A → B → A under a key field is stored three times, in order; by hash alone the
    // return to A looks like a redelivery.
    let sync = fresh_sync_id();
    for (hash, fields) in [("a", r#"{"id":1,"v":"A"}"#), ("b", r#"{"id":1,"v":"B"}"#)] {
        assert_eq!(
            by_id.store(&batch(&sync, &[(hash, fields)])).await.unwrap(),
            counts(1, 0, 0)
        );
    }
    let back_to_a = batch(&sync, &[("a", r#"{"id":1,"v":"A"}"#)]);
    assert_eq!(by_id.store(&back_to_a).await.unwrap(), counts(1, 0, 0));
    let hashes: Vec<String> = held(&by_id, &sync).await.into_iter().map(|r| r.1).collect();
    assert_eq!(hashes, ["a", "b", "a"]);
    assert_eq!(by_id.store(&back_to_a).await.unwrap(), counts(0, 1, 0));
    let sync = fresh_sync_id();
    for (hash, fields) in [
        ("a", r#"{"v":"A"}"#),
        ("b", r#"{"v":"B"}"#),
        ("a", r#"{"v":"A"}"#),
    ] {
        by_hash
            .store(&batch(&sync, &[(hash, fields)]))
            .await
            .unwrap();
    }
    assert_eq!(held(&by_hash, &sync).await.len(), 2);

    // The key is the value's JSON text: `1` and `"1"` are two records. A missing or null key
    // falls back to the hash.
    let sync = fresh_sync_id();
    let mixed = batch(
        &sync,
        &[
            ("x", r#"{"id":1}"#),
            ("x", r#"{"id":"1"}"#),
            ("y", r#"{"other":1}"#),
            ("z", r#"{"id":null}"#),
        ],
    );
    assert_eq!(by_id.store(&mixed).await.unwrap(), counts(4, 0, 0));
    assert_eq!(by_id.store(&mixed).await.unwrap(), counts(0, 4, 0));
    let keys: Vec<Option<String>> = held(&by_id, &sync).await.into_iter().map(|r| r.0).collect();
    assert_eq!(keys, [Some("1".into()), Some(r#""1""#.into()), None, None]);

    // Inside one batch, the records of one identity collapse to the last of them: only it is
    // compared and stored, so the batch delivered again (a retry after a lost 200) stores
    // nothing, and a second copy of a record is superseded rather than unchanged.
    let sync = fresh_sync_id();
    let updated_twice = batch(
        &sync,
        &[
            ("v1", r#"{"id":7,"v":1}"#),
            ("v2", r#"{"id":7,"v":2}"#),
            ("w1", r#"{"id":8}"#),
        ],
    );
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(by_id.store(&updated_twice).await.unwrap());
    }
    assert_eq!(answers, [counts(2, 0, 1), counts(0, 2, 1), counts(0, 2, 1)]);
    let hashes: Vec<String> = held(&by_id, &sync).await.into_iter().map(|r| r.1).collect();
    assert_eq!(hashes, ["v2", "w1"]);
    let twice = batch(&sync, &[("h", r#"{"id":5}"#), ("h", r#"{"id":5}"#)]);
    assert_eq!(by_id.store(&twice).await.unwrap(), counts(1, 0, 1));
    // The same by hash: two records with one hash are one identity, stored once.
    let sync = fresh_sync_id();
    let same_hash = batch(
        &sync,
        &[("h", r#"{"n":1}"#), ("g", "{}"), ("h", r#"{"n":2}"#)],
    );
    assert_eq!(by_hash.store(&same_hash).await.unwrap(), counts(2, 0, 1));
    assert_eq!(by_hash.store(&same_hash).await.unwrap(), counts(0, 2, 1));
    let fields: Vec<String> = held(&by_hash, &sync)
        .await
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(fields, ["{}", r#"{"n":2}"#]);

    // Syncs do not share identities.
    let (one, two) = (fresh_sync_id(), fresh_sync_id());
    for sync in [&one, &two] {
        let same = batch(sync, &[("h", r#"{"id":5}"#)]);
        assert_eq!(by_id.store(&same).await.unwrap(), counts(1, 0, 0));
    }

    // What is stored is what was received: the fields' text (numbers exactly), the sync name.
    let sync = fresh_sync_id();
    let exact = r#"{"id":9,"amount":0.1000000000000000055511151231257827,"big":1e400}"#;
    let named = SyncRecords::new(
        sync.clone(),
        "Users \u{1F600}",
        vec![Record::new(RecordHash::new("e"), exact.parse().unwrap())],
    );
    by_id.store(&named).await.unwrap();
    let stored: Vec<StoredRecord> = by_id
        .records()
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.sync_id == sync.as_str())
        .collect();
    assert_eq!(
        stored,
        [StoredRecord {
            sync_id: sync.as_str().to_owned(),
            sync_name: "Users \u{1F600}".to_owned(),
            key: Some("9".to_owned()),
            hash: "e".to_owned(),
            fields: exact.to_owned(),
        }]
    );

    // Read a page at a time, the records are those `records` gives, in store order, across
    // the pages' boundaries.
    let sync = fresh_sync_id();
    let hashes: Vec<String> = (0..2_500).map(|n| format!("p{n}")).collect();
    for part in hashes.chunks(1_000) {
        let records: Vec<(&str, &str)> = part.iter().map(|hash| (hash.as_str(), "{}")).collect();
        by_hash.store(&batch(&sync, &records)).await.unwrap();
    }
    let mut stream = by_hash.record_stream();
    let mut streamed = Vec::new();
    while let Some(record) = stream.next().await {
        let record = record.unwrap();
        if record.sync_id == sync.as_str() {
            streamed.push(record.hash);
        }
    }
    assert_eq!(streamed, hashes);
    let held: Vec<String> = held(&by_hash, &sync)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(held, hashes);

    // An empty batch is valid and stores nothing.
    let empty = batch(&fresh_sync_id(), &[]);
    assert_eq!(by_id.store(&empty).await.unwrap(), counts(0, 0, 0));
}
