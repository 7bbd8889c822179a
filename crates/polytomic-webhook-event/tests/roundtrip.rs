//! Property: any batch, serialized as a delivery, extracts back to itself.
#![allow(clippy::unwrap_used)] // Tests and their helpers panic on unexpected outcomes by design.

mod common;

use common::{extract, request};
use polytomic_webhook_event::strategy::{batch, batch_of};
use polytomic_webhook_event::{EventConfig, Fields, PolytomicEvent, SyncRecords, parse};
use proptest::prelude::*;

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
    batch_of(row)
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
