//! Property: any batch, serialized as a delivery, extracts back to itself.
#![allow(clippy::unwrap_used)] // Tests and their helpers panic on unexpected outcomes by design.

mod common;

use common::{extract, request};
use polytomic_webhook_event::{
    EventConfig, Fields, PolytomicEvent, Record, RecordHash, SyncId, SyncRecords, parse,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Fractions that serde_json's default (not `float_roundtrip`) parser reads back exactly;
        // its last-digit rounding of long decimals is not this crate's concern.
        (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 64.0)),
        any::<String>().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(any::<String>(), json_value(), 0..5)
        .prop_map(|map| map.into_iter().collect())
}

fn sync_id() -> impl Strategy<Value = SyncId> {
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
        .prop_map(|text| SyncId::parse(text).unwrap())
}

fn batch() -> impl Strategy<Value = SyncRecords<Fields>> {
    let record = (any::<String>(), object())
        .prop_map(|(hash, fields)| Record::new(RecordHash::new(hash), fields));
    (
        sync_id(),
        any::<String>(),
        prop::collection::vec(record, 0..6),
        object(),
    )
        .prop_map(|(id, name, records, metadata)| {
            SyncRecords::new(id, name, records).with_metadata(metadata)
        })
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Row {
    email: String,
    visits: u32,
    score: Option<i64>,
}

fn typed_batch() -> impl Strategy<Value = SyncRecords<Row>> {
    let row =
        (any::<String>(), any::<u32>(), any::<Option<i64>>()).prop_map(|(email, visits, score)| {
            Row {
                email,
                visits,
                score,
            }
        });
    let record =
        ("[a-f0-9]{16}", row).prop_map(|(hash, row)| Record::new(RecordHash::new(hash), row));
    (
        sync_id(),
        any::<String>(),
        prop::collection::vec(record, 0..6),
        object(),
    )
        .prop_map(|(id, name, records, metadata)| {
            SyncRecords::new(id, name, records).with_metadata(metadata)
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn dynamic_batches_round_trip(batch in batch()) {
        let body = serde_json::to_vec(&PolytomicEvent::SyncRecords(batch.clone())).unwrap();
        let extracted = runtime()
            .block_on(extract::<SyncRecords<Fields>>(request(body.clone())))
            .unwrap();
        prop_assert_eq!(&extracted, &batch);
        let parsed = parse::<Fields>(&body, &EventConfig::default()).unwrap();
        prop_assert_eq!(parsed, PolytomicEvent::SyncRecords(batch));
    }

    #[test]
    fn typed_batches_round_trip(batch in typed_batch()) {
        let body = serde_json::to_vec(&PolytomicEvent::SyncRecords(batch.clone())).unwrap();
        let extracted = runtime()
            .block_on(extract::<SyncRecords<Row>>(request(body)))
            .unwrap();
        prop_assert_eq!(extracted, batch);
    }
}
