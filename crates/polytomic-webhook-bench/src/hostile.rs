//! Hostile delivery shapes: bodies built so that parsing them into a tree costs about a hundred
//! times their bytes, and what each costs our stack (the composed layer and the `SyncRecords`
//! extractor) in heap.
//!
//! Every body is gzipped as Polytomic sends it and authenticated, and its decoded size stays
//! well under the 32 MiB default limits. These bodies are runs of one short pattern, so they
//! compress about 230:1: the layer's 100:1 ratio check, which would refuse them before any
//! parsing, is turned off so that the parser is what gets measured.
//!
//! As with the bomb, heap figures come from `peak_alloc`'s counters and are only meaningful in
//! a binary that installs [`peak_alloc::PeakAlloc`] as its global allocator (the `report` binary
//! does).

use std::fmt;

use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use polytomic_webhook::event::{EventConfig, Fields, RawFields};
use polytomic_webhook::prelude::PolytomicWebhookConfig;
use serde_json::Value;
use tower::ServiceExt;

use crate::bomb::measure;
use crate::payload::gzip;
use crate::pipelines::{SECRET, our_layer_with, ours_router_with, read, request};

const MIB: usize = 1024 * 1024;

/// The decoded size of each body in the full report: about what the issue describes, under the
/// 32 MiB limits.
pub const FULL_SIZE: usize = 30 * MIB;
/// The decoded size in `--quick` runs; large enough that the record-count shape still passes
/// the default `max_records`.
pub const QUICK_SIZE: usize = 4 * MIB;

/// A sync id that passes the UUID check.
const SYNC_ID: &str = "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7";
/// The record that exceeds `max_records` in [`Shape::TooManyRecords`].
const EMPTY_RECORD: &str = r#"{"hash":"","fields":{}}"#;

/// Where the hostile array sits, or what else makes the body hostile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `{"a":[{"":0},{"":0},…]}` as one record's `fields`.
    ArrayInFields,
    /// The same object as the batch's `metadata`.
    ArrayInMetadata,
    /// The same object as the `object` of an event type nobody knows (`sync.future`).
    ArrayInUnknownEvent,
    /// [`Shape::ArrayInFields`] with `object` before `event`, so the parser cannot know the
    /// event type when it meets the records.
    ObjectBeforeEvent,
    /// [`Shape::ArrayInFields`] with its last byte replaced by `0xFF`.
    InvalidUtf8LastByte,
    /// `object` before `event`, holding more than the default `max_records` empty records.
    TooManyRecords,
}

impl Shape {
    /// A short description, for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::ArrayInFields => "array in a record's `fields`",
            Self::ArrayInMetadata => "array in `metadata`",
            Self::ArrayInUnknownEvent => "array in an unknown event's `object`",
            Self::ObjectBeforeEvent => "`object` before `event`, array in `fields`",
            Self::InvalidUtf8LastByte => "array in `fields`, last byte invalid UTF-8",
            Self::TooManyRecords => "`object` before `event`, > `max_records` empty records",
        }
    }

    /// The JSON body of about `size` bytes.
    pub fn body(self, size: usize) -> Vec<u8> {
        let records_with_tree = || format!(r#"[{{"hash":"h","fields":{{"a":{}}}}}]"#, tree(size));
        match self {
            Self::ArrayInFields => envelope(&records_with_tree(), "").into_bytes(),
            Self::ArrayInMetadata => {
                envelope("[]", &format!(r#","metadata":{{"a":{}}}"#, tree(size))).into_bytes()
            }
            Self::ArrayInUnknownEvent => format!(
                r#"{{"event":"sync.future","object":{{"a":{}}}}}"#,
                tree(size)
            )
            .into_bytes(),
            Self::ObjectBeforeEvent => object_first(&records_with_tree()).into_bytes(),
            Self::InvalidUtf8LastByte => {
                let mut body = Self::ArrayInFields.body(size);
                if let Some(last) = body.last_mut() {
                    *last = 0xFF;
                }
                body
            }
            Self::TooManyRecords => {
                let count =
                    (size / (EMPTY_RECORD.len() + 1)).max(EventConfig::default().max_records + 1);
                let records = vec![EMPTY_RECORD; count].join(",");
                object_first(&format!("[{records}]")).into_bytes()
            }
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[{"":0},{"":0},…]` of at least `len` bytes: an object and its map for every seven bytes.
fn tree(len: usize) -> String {
    const ELEMENT: &str = r#"{"":0}"#;
    let count = (len / (ELEMENT.len() + 1)).max(1);
    format!("[{}]", vec![ELEMENT; count].join(","))
}

fn envelope(records: &str, rest_of_object: &str) -> String {
    format!(
        r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":{records}{rest_of_object}}}}}"#
    )
}

fn object_first(records: &str) -> String {
    format!(
        r#"{{"object":{{"id":"{SYNC_ID}","name":"n","records":{records}}},"event":"sync.records"}}"#
    )
}

/// The record type of the receiving handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    /// The default `SyncRecords`, i.e. `SyncRecords<RawFields>`: the text is kept.
    Raw,
    /// `SyncRecords<Fields>`: every record's fields become a map, within the heap budget.
    Fields,
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Raw => "`SyncRecords` (`RawFields`)",
            Self::Fields => "`SyncRecords<Fields>`",
        })
    }
}

/// One row of the heap table: a body shape, a receiver, and the answer it must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The body.
    pub shape: Shape,
    /// The handler's record type.
    pub record_type: RecordType,
    /// The status the delivery must get.
    pub status: StatusCode,
    /// The problem `code` it must carry, for a refusal.
    pub code: Option<&'static str>,
}

impl Case {
    const fn new(
        shape: Shape,
        record_type: RecordType,
        status: StatusCode,
        code: Option<&'static str>,
    ) -> Self {
        Self {
            shape,
            record_type,
            status,
            code,
        }
    }

    /// Every case, in table order.
    pub const ALL: [Self; 7] = [
        Self::new(Shape::ArrayInFields, RecordType::Raw, StatusCode::OK, None),
        Self::new(
            Shape::ArrayInMetadata,
            RecordType::Raw,
            StatusCode::OK,
            None,
        ),
        Self::new(
            Shape::ArrayInUnknownEvent,
            RecordType::Raw,
            StatusCode::OK,
            None,
        ),
        Self::new(
            Shape::ObjectBeforeEvent,
            RecordType::Raw,
            StatusCode::OK,
            None,
        ),
        Self::new(
            Shape::InvalidUtf8LastByte,
            RecordType::Raw,
            StatusCode::BAD_REQUEST,
            Some("invalid_json"),
        ),
        Self::new(
            Shape::TooManyRecords,
            RecordType::Raw,
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("too_many_records"),
        ),
        Self::new(
            Shape::ArrayInFields,
            RecordType::Fields,
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("body_too_large"),
        ),
    ];

    /// The receiver: our layer with `event` (and the ratio check off) around a handler taking
    /// this case's record type.
    pub fn router(self, event: EventConfig) -> Router {
        let mut config = PolytomicWebhookConfig::default().event(event);
        config.decompression.max_ratio = None;
        let layer = our_layer_with(config);
        match self.record_type {
            RecordType::Raw => ours_router_with::<RawFields>(layer),
            RecordType::Fields => ours_router_with::<Fields>(layer),
        }
    }

    /// Sends this case's body of about `size` decoded bytes, gzipped, to [`Case::router`] and
    /// measures the peak heap from the request to the last byte of the answer.
    pub async fn run(self, size: usize, event: EventConfig) -> HeapRun {
        let json = self.shape.body(size);
        let gzipped = Bytes::from(gzip(&json));
        let router = self.router(event);
        let request = request(&gzipped, SECRET);
        let measured = measure(async { read(router.oneshot(request).await).await }).await;
        let (status, answer) = measured.output;
        let problem: Value =
            serde_json::from_slice(&answer.unwrap_or_default()).unwrap_or_default();
        let member = |name: &str| problem.get(name).and_then(Value::as_str).map(str::to_owned);
        HeapRun {
            case: self,
            decoded: json.len(),
            gzipped: gzipped.len(),
            status,
            code: member("code"),
            limit: member("limit"),
            peak_heap: measured.peak_heap,
        }
    }
}

/// What one case cost.
#[derive(Clone, Debug)]
pub struct HeapRun {
    /// The case.
    pub case: Case,
    /// The body's decoded size.
    pub decoded: usize,
    /// The body's gzipped size.
    pub gzipped: usize,
    /// The answer's status.
    pub status: StatusCode,
    /// The problem's `code`, if the answer is a problem.
    pub code: Option<String>,
    /// The problem's `limit`, if it names one.
    pub limit: Option<String>,
    /// Peak heap above what was in use before the request, in bytes (the gzipped body, built
    /// before, is not counted; its decoded copy is).
    pub peak_heap: usize,
}

impl HeapRun {
    /// The bound the table checks: four times the decoded body plus 1 MiB.
    pub fn bound(&self) -> usize {
        4 * self.decoded + MIB
    }

    /// Whether the peak heap stayed within [`HeapRun::bound`].
    pub fn within_bound(&self) -> bool {
        self.peak_heap <= self.bound()
    }

    /// The answer as the table shows it: status, then code and limit when there are any.
    pub fn answer(&self) -> String {
        let mut answer = self.status.as_u16().to_string();
        for part in [&self.code, &self.limit].into_iter().flatten() {
            answer.push(' ');
            answer.push_str(part);
        }
        answer
    }

    /// Whether the answer is the one the case expects; why not, otherwise.
    pub fn check(&self) -> Result<(), String> {
        if self.status == self.case.status && self.code.as_deref() == self.case.code {
            Ok(())
        } else {
            Err(format!(
                "{} with {}: answered {}, expected {} {}",
                self.case.shape,
                self.case.record_type,
                self.answer(),
                self.case.status.as_u16(),
                self.case.code.unwrap_or_default(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_is_valid_json_but_the_invalid_one() {
        for shape in [
            Shape::ArrayInFields,
            Shape::ArrayInMetadata,
            Shape::ArrayInUnknownEvent,
            Shape::ObjectBeforeEvent,
        ] {
            let body = shape.body(64 * 1024);
            assert!((64 * 1024..65 * 1024).contains(&body.len()), "{shape}");
            let value: Value = serde_json::from_slice(&body).unwrap();
            let object = value["object"].as_object().unwrap();
            let tree = match shape {
                Shape::ArrayInMetadata => &object["metadata"]["a"],
                Shape::ArrayInUnknownEvent => &object["a"],
                _ => &object["records"][0]["fields"]["a"],
            };
            assert_eq!(tree.as_array().unwrap().len(), 64 * 1024 / 7, "{shape}");
        }
        let invalid = Shape::InvalidUtf8LastByte.body(1024);
        assert_eq!(invalid.last(), Some(&0xFF));
        assert!(std::str::from_utf8(&invalid).is_err());
        assert_eq!(
            &invalid[..invalid.len() - 1],
            &Shape::ArrayInFields.body(1024)[..invalid.len() - 1]
        );
    }

    #[test]
    fn the_record_count_shape_has_one_record_too_many_at_least() {
        let body = Shape::TooManyRecords.body(0);
        let value: Value = serde_json::from_slice(&body).unwrap();
        let records = value["object"]["records"].as_array().unwrap();
        assert_eq!(records.len(), EventConfig::default().max_records + 1);
        assert!(body.starts_with(br#"{"object":"#));
    }

    /// Small bodies, and a 1 MiB heap budget so that the `Fields` case is refused as the full
    /// size is by the default budget; the raw record type is not charged at all.
    #[test]
    fn every_case_gets_its_answer() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let event = EventConfig::default().max_heap_bytes(MIB);
        for case in Case::ALL {
            let run = runtime.block_on(case.run(256 * 1024, event.clone()));
            run.check().unwrap();
            if case.record_type == RecordType::Fields {
                assert_eq!(run.limit.as_deref(), Some("heap"));
            }
        }
    }
}
