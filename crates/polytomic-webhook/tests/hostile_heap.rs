//! The heap one hostile delivery can make the stack allocate, through the composed layer and the
//! `SyncRecords` extractor, for every body shape that used to build a tree much larger than the
//! body: each stays within 4 × its decoded bytes + 1 MiB with the default record type (or is
//! refused before), and with `Fields` the heap budget stops it.
//!
//! The bodies are about 30 MiB, uncompressed, authenticated: within every default limit. The
//! allocator counts every thread, so this binary has no test harness: one `main`, one request at a
//! time. Peak heap is measured above what was in use before the request (the request's own body,
//! built by the test, is not counted).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // Test code: a failed unwrap is a failed test.

use axum::Router;
use axum::routing::post;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use peak_alloc::PeakAlloc;
use polytomic_webhook::auth::FixedClock;
use polytomic_webhook::prelude::*;
use tower::ServiceExt;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MIB: usize = 1024 * 1024;
const SIZE: usize = 30 * MIB;
const TIMESTAMP: &str = "2025-06-01T12:00:00Z";
const SECRET: &str = "hostile-heap-secret";
const SYNC_ID: &str = "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7";

/// `[{"":0},{"":0},…]` of about `len` bytes: seven bytes of text per JSON object.
fn tree(len: usize) -> String {
    let mut text = String::with_capacity(len + 16);
    text.push('[');
    while text.len() < len {
        text.push_str(r#"{"":0},"#);
    }
    text.push_str(r#"{"":0}]"#);
    text
}

fn records_body(records: &str) -> String {
    format!(
        r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":{records}}}}}"#
    )
}

/// The shapes, each with the answer the default record type gives.
fn shapes() -> Vec<(&'static str, Vec<u8>, StatusCode)> {
    let fields = format!(r#"[{{"hash":"h","fields":{{"a":{}}}}}]"#, tree(SIZE));
    let mut invalid_utf8 = records_body(&fields).into_bytes();
    invalid_utf8.pop();
    invalid_utf8.push(0xff);
    let empty_records = {
        let mut records = String::from("[");
        while records.len() < SIZE {
            records.push_str(r#"{"hash":"","fields":{}},"#);
        }
        records.push_str(r#"{"hash":"","fields":{}}]"#);
        records
    };
    vec![
        (
            "array in fields",
            records_body(&fields).into_bytes(),
            StatusCode::OK,
        ),
        (
            "array in metadata",
            format!(
                r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":[],"metadata":{{"a":{}}}}}}}"#,
                tree(SIZE)
            )
            .into_bytes(),
            StatusCode::OK,
        ),
        (
            "array in an unknown event's object",
            format!(r#"{{"event":"sync.future","object":{{"a":{}}}}}"#, tree(SIZE)).into_bytes(),
            StatusCode::OK,
        ),
        (
            "object before event",
            format!(
                r#"{{"object":{{"id":"{SYNC_ID}","name":"n","records":{fields}}},"event":"sync.records"}}"#
            )
            .into_bytes(),
            StatusCode::OK,
        ),
        (
            "invalid UTF-8 in the last byte",
            invalid_utf8,
            StatusCode::BAD_REQUEST,
        ),
        (
            "object before event, more than max_records empty records",
            format!(
                r#"{{"object":{{"id":"{SYNC_ID}","name":"n","records":{empty_records}}},"event":"sync.records"}}"#
            )
            .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "more than max_records empty records",
            records_body(&empty_records).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ]
}

fn layer(event: EventConfig) -> PolytomicWebhookLayer<FixedClock> {
    let config = PolytomicWebhookConfig::default()
        .secret(Secret::new(SECRET).unwrap())
        .event(event);
    PolytomicWebhookLayer::new(config)
        .unwrap()
        .clock(FixedClock(TIMESTAMP.parse().unwrap()))
}

fn request(body: Vec<u8>) -> Request<axum::body::Body> {
    Request::post("/")
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {SECRET}"))
        .header("polytomic-signature-timestamp", TIMESTAMP)
        .body(axum::body::Body::from(body))
        .unwrap()
}

/// Sends `body` through `app` and returns the status, the problem code (if any) and the peak heap
/// above what was in use before, the response body included.
fn measure(
    runtime: &tokio::runtime::Runtime,
    app: Router,
    body: Vec<u8>,
) -> (StatusCode, String, usize) {
    measure_request(runtime, app, request(body))
}

/// [`measure`] for any request.
fn measure_request(
    runtime: &tokio::runtime::Runtime,
    app: Router,
    request: Request<axum::body::Body>,
) -> (StatusCode, String, usize) {
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let (status, answer) = runtime.block_on(async {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    let peak = HEAP.peak_usage().saturating_sub(before);
    let code = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|value| {
            value
                .get("code")
                .and_then(|code| code.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, code, peak)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw_app = || {
        Router::new()
            .route(
                "/",
                post(|batch: SyncRecords| async move { Ack::from(&batch) }),
            )
            .layer(layer(EventConfig::default()))
    };
    let mut failures = Vec::new();
    println!("| shape | decoded bytes | answer | peak heap | peak / decoded | bound 4x + 1 MiB |");
    println!("|---|---:|---|---:|---:|---:|");
    for (name, body, expected) in shapes() {
        let decoded = body.len();
        let bound = 4 * decoded + MIB;
        let (status, code, peak) = measure(&runtime, raw_app(), body);
        #[allow(clippy::cast_precision_loss)] // A ratio for display.
        let ratio = peak as f64 / decoded as f64;
        println!("| {name} | {decoded} | {status} {code} | {peak} | {ratio:.2} | {bound} |");
        if status != expected {
            failures.push(format!(
                "{name}: answered {status} {code}, expected {expected}"
            ));
        }
        if peak > bound {
            failures.push(format!("{name}: peak heap {peak} > {bound}"));
        }
    }

    // `Fields` builds a map per record: the heap budget (lowered here to 64 MiB so the test is
    // quick) refuses the tree before it passes the budget.
    let budget = 64 * MIB;
    let fields_app = Router::new()
        .route(
            "/",
            post(|batch: SyncRecords<Fields>| async move { Ack::from(&batch) }),
        )
        .layer(layer(EventConfig::default().max_heap_bytes(budget)));
    let body = records_body(&format!(
        r#"[{{"hash":"h","fields":{{"a":{}}}}}]"#,
        tree(SIZE)
    ))
    .into_bytes();
    let (status, code, peak) = measure(&runtime, fields_app, body);
    println!(
        "| array in fields, `Fields` with a {budget}-byte budget | {SIZE} | {status} {code} | {peak} | | {budget} |"
    );
    if status != StatusCode::PAYLOAD_TOO_LARGE || code != "body_too_large" {
        failures.push(format!(
            "Fields: answered {status} {code}, expected 413 body_too_large"
        ));
    }
    if peak > budget + 2 * MIB {
        failures.push(format!(
            "Fields: peak heap {peak} > budget {budget} + 2 MiB"
        ));
    }

    events(&runtime, &mut failures);

    if failures.is_empty() {
        println!("hostile_heap: 11 passed, 0 failed");
    } else {
        for failure in &failures {
            println!("FAILED: {failure}");
        }
        std::process::exit(1);
    }
}

/// A body that arrives in 16 KiB frames, as from a socket, and declares its length, as hyper's
/// does for a `Content-Length`. The frames are views of one buffer the test built before.
struct Frames(bytes::Bytes);

impl http_body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let len = self.0.len().min(16 << 10);
        std::task::Poll::Ready((len > 0).then(|| Ok(http_body::Frame::data(self.0.split_to(len)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.len() as u64)
    }
}

/// One accepted organisation event of 8 MiB (the route's limits raised to 16 MiB) through the
/// events layer, the dedup layer and the extractor: the received body is held once, the
/// decoded one once, and nothing downstream copies either (the layer's parse is shared).
fn events(runtime: &tokio::runtime::Runtime, failures: &mut Vec<String>) {
    use polytomic_webhook::auth::signature::sign_hex;
    use polytomic_webhook::dedup::{DedupLayer, MemoryEventIdStore};

    const EVENTS_SECRET: &str = "hostile-heap-events-secret";
    let mut state = 0x9e37_79b9_u32;
    let blob: String = (0..8 * MIB)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            ['a', 'c', 'g', 't'][(state % 4) as usize]
        })
        .collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let json = |id: &str| {
        format!(
            r#"{{"id":"{id}","organization_id":"o","type":"sync.failed","created_at":"{now}","event":{{"blob":"{blob}"}}}}"#
        )
        .into_bytes()
    };
    let gzip = |data: &[u8]| {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    };
    let config = PolytomicOrgEventsConfig::default()
        .secrets(SigningSecrets::new(EVENTS_SECRET).unwrap())
        .max_received_bytes(16 * MIB as u64)
        .max_decoded_bytes(16 * MIB as u64);
    let app = Router::new()
        .route(
            "/",
            post(|event: PolytomicOrgEvent| async move { event.id().to_owned() }),
        )
        .layer(DedupLayer::new(MemoryEventIdStore::new(10)))
        .layer(PolytomicOrgEventsLayer::new(config).unwrap());
    for (name, gzipped, signed_decoded) in [
        ("plain", false, false),
        ("gzip, signed as received", true, false),
        ("gzip, signed as decoded", true, true),
    ] {
        let decoded = json(name);
        let sent = if gzipped {
            gzip(&decoded)
        } else {
            decoded.clone()
        };
        let signature = sign_hex(EVENTS_SECRET, if signed_decoded { &decoded } else { &sent });
        let mut request = Request::post("/")
            .header(CONTENT_TYPE, "application/json")
            .header("polytomic-signature", signature)
            .body(axum::body::Body::new(Frames(sent.clone().into())))
            .unwrap();
        if gzipped {
            request
                .headers_mut()
                .insert("content-encoding", "gzip".parse().unwrap());
        }
        let (status, code, peak) = measure_request(runtime, app.clone(), request);
        // The received bytes once, the decoded bytes once (one buffer of the trailer's size),
        // and the decoder's working buffers (its output frames, copied in and dropped).
        let bound = if gzipped {
            sent.len() + decoded.len() + MIB
        } else {
            decoded.len() + MIB / 4
        };
        println!(
            "| organisation event, {name} | {} | {status} {code} | {peak} | {:.2} | {bound} |",
            decoded.len(),
            peak as f64 / decoded.len() as f64
        );
        if status != StatusCode::OK {
            failures.push(format!("event {name}: answered {status} {code}"));
        }
        if peak > bound {
            failures.push(format!("event {name}: peak heap {peak} > {bound}"));
        }
    }
}
