//! [proptest](https://docs.rs/proptest) strategies that generate valid deliveries (feature
//! `proptest`), for property tests of the extractor and of your own handlers.
//!
//! Generated values cover what Polytomic may send and more: any Unicode in names, keys and
//! strings (escapes included), integers across the whole `i64`/`u64` range, fractions, `null`,
//! nested arrays and objects, empty batches.
//!
//! ```
//! use polytomic_webhook_event::strategy::batch;
//! use polytomic_webhook_event::{EventConfig, Fields, PolytomicEvent, parse_sync_records};
//! use proptest::prelude::*;
//!
//! proptest!(|(batch in batch())| {
//!     let body = serde_json::to_vec(&PolytomicEvent::SyncRecords(batch.clone())).unwrap();
//!     let parsed = parse_sync_records::<Fields>(&body, &EventConfig::default()).unwrap();
//!     prop_assert_eq!(parsed, batch);
//! });
//! ```

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::event::{Fields, Record, RecordHash, SyncId, SyncRecords};
use crate::raw::RawFields;

/// A JSON scalar: `null`, a boolean, an integer, a float, a string.
pub fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Any finite float: the workspace parses with serde_json's `float_roundtrip`, so a
        // number reaches the handler exactly as it was sent.
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

/// Any JSON value, nested up to three levels.
pub fn json_value() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A JSON object with any keys, as a record's `fields` or a batch's `metadata`.
pub fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(any::<String>(), json_value(), 0..5)
        .prop_map(|map| map.into_iter().collect())
}

/// A sync id in UUID form, in either letter case.
pub fn sync_id() -> impl Strategy<Value = SyncId> {
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}".prop_map(|text| {
        SyncId::parse(text).unwrap_or_else(|_| unreachable!("the pattern is a UUID"))
    })
}

/// A batch whose records' fields come from `fields`.
pub fn batch_of<T: std::fmt::Debug>(
    fields: impl Strategy<Value = T>,
) -> impl Strategy<Value = SyncRecords<T>> {
    let record = (any::<String>(), fields)
        .prop_map(|(hash, fields)| Record::new(RecordHash::new(hash), fields));
    (
        sync_id(),
        any::<String>(),
        prop::collection::vec(record, 0..6),
        json_object(),
    )
        .prop_map(|(id, name, records, metadata)| {
            SyncRecords::new(id, name, records).with_metadata(metadata.into())
        })
}

/// A batch with dynamic fields.
pub fn batch() -> impl Strategy<Value = SyncRecords<Fields>> {
    batch_of(json_object())
}

/// A batch with each record's fields kept as JSON text (the default record type).
pub fn raw_batch() -> impl Strategy<Value = SyncRecords<RawFields>> {
    batch_of(json_object().prop_map(RawFields::from))
}
