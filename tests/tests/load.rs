//! Load: 200 concurrent clients × 50 deliveries each against the receiver example over TCP,
//! 80 % valid and 20 % spread over the refusals. Nothing may be lost, duplicated, handed to
//! the handler when refused, or left on the heap afterwards.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use peak_alloc::PeakAlloc;
use polytomic_webhook::testing::{Delivery, record_hash};
use serde_json::{Value, json};
use support::*;

// Counts every heap byte of this test binary: client and server share the process, so the
// check after the run covers both.
#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const CLIENTS: usize = 200;
const PER_CLIENT: usize = 50;

/// What is left on the heap once every connection has closed may exceed the level before the
/// run by this much (allocator-internal caches, tokio's grown worker queues). 200 connections'
/// buffers or 10,000 batches kept alive are far larger.
const HEAP_MARGIN: usize = 1 << 20;

/// The refusals the mix sends, each with its documented status and problem `code`.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    WrongSecret,
    NoAuthorization,
    StaleTimestamp,
    MalformedJson,
    Bomb,
    UnsupportedCoding,
    NotJson,
    TruncatedGzip,
    NotABatch,
}

const REFUSALS: [Refusal; 9] = [
    Refusal::WrongSecret,
    Refusal::NoAuthorization,
    Refusal::StaleTimestamp,
    Refusal::MalformedJson,
    Refusal::Bomb,
    Refusal::UnsupportedCoding,
    Refusal::NotJson,
    Refusal::TruncatedGzip,
    Refusal::NotABatch,
];

impl Refusal {
    fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Self::WrongSecret => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::NoAuthorization => (StatusCode::UNAUTHORIZED, "missing_authorization"),
            Self::StaleTimestamp => (StatusCode::UNAUTHORIZED, "timestamp_too_old"),
            Self::MalformedJson => (StatusCode::BAD_REQUEST, "invalid_json"),
            Self::Bomb => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UnsupportedCoding => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_encoding",
            ),
            Self::NotJson => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::TruncatedGzip => (StatusCode::BAD_REQUEST, "invalid_compressed_body"),
            Self::NotABatch => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_envelope"),
        }
    }

    /// Spoils a delivery that carries `marker`; `bomb` is a ready gzip bomb, built once.
    fn spoil(self, valid: Delivery, bomb: &Bytes) -> (http::HeaderMap, Bytes) {
        let delivery = match self {
            Self::WrongSecret => valid.wrong_secret(),
            Self::NoAuthorization => {
                let (mut headers, body) = valid.encode();
                headers.remove(http::header::AUTHORIZATION);
                return (headers, body);
            }
            Self::StaleTimestamp => valid.stale_timestamp(),
            Self::MalformedJson => valid.malformed_json(),
            Self::NotABatch => valid.raw_json(br#"{"event":"sync.records","object":{"id":"x"}}"#),
            Self::Bomb => {
                let (headers, _) = valid.encode();
                return (headers, bomb.clone());
            }
            Self::UnsupportedCoding => {
                let (mut headers, body) = valid.encode();
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("compress"));
                return (headers, body);
            }
            Self::NotJson => {
                let (mut headers, body) = valid.encode();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                return (headers, body);
            }
            Self::TruncatedGzip => {
                let (headers, body) = valid.encode();
                return (headers, body.slice(..body.len() / 2));
            }
        };
        delivery.encode()
    }
}

/// Delivery number `n`: its marker and whether (and how) it is spoiled. Two in ten are
/// refused, the refusals taking turns through [`REFUSALS`].
fn plan(n: usize) -> (String, Option<Refusal>) {
    let marker = format!("delivery-{n}");
    let slot = n % 10;
    let refusal = (slot >= 8).then(|| REFUSALS[(n / 10 * 2 + slot - 8) % REFUSALS.len()]);
    (marker, refusal)
}

/// One to three small records, every one carrying the delivery's marker.
fn records(n: usize, marker: &str) -> Vec<Value> {
    (0..=n % 3)
        .map(|i| json!({"marker": marker, "i": i, "email": format!("user{n}-{i}@example.com")}))
        .collect()
}

/// What a client saw for one delivery.
struct Outcome {
    marker: String,
    refusal: Option<Refusal>,
    /// The records sent, as `(hash, fields)`, for valid deliveries.
    sent: Vec<(String, Value)>,
    reply: Reply,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mixed_deliveries_from_200_clients_lose_and_duplicate_nothing() {
    let server = start_axum(config()).await;
    let addr = server.addr;
    // Zeros compress about 1000:1, so the 100:1 ratio limit fires after the first MiB.
    let (_, bomb) = Delivery::new().bomb(4 << 20).encode();

    // Lazily built state (tracing's callsites, the runtime's timers) belongs to the baseline.
    send(addr, sample(addr, http::Version::HTTP_11))
        .await
        .assert_accepted(2);
    assert_eq!(server.received.take().len(), 1);
    let baseline = HEAP.current_usage();
    HEAP.reset_peak_usage();

    let client = Client::builder(TokioExecutor::new())
        // One connection per client at most, and none kept once idle for long.
        .pool_max_idle_per_host(CLIENTS)
        .pool_idle_timeout(Duration::from_secs(5))
        .build_http::<ClientBody>();
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for c in 0..CLIENTS {
        let client = client.clone();
        let bomb = bomb.clone();
        clients.push(tokio::spawn(async move {
            let mut outcomes = Vec::with_capacity(PER_CLIENT);
            for k in 0..PER_CLIENT {
                let n = c * PER_CLIENT + k;
                let (marker, refusal) = plan(n);
                let fields = records(n, &marker);
                let valid = Delivery::new()
                    .secret(SECRET)
                    .records(fields.iter().cloned());
                let delivery = match refusal {
                    Some(refusal) => refusal.spoil(valid, &bomb),
                    None => valid.encode(),
                };
                let response = client.request(encoded(addr, delivery)).await.unwrap();
                let sent = match refusal {
                    Some(_) => Vec::new(),
                    None => fields
                        .into_iter()
                        .map(|fields| (record_hash(&fields), fields))
                        .collect(),
                };
                outcomes.push(Outcome {
                    marker,
                    refusal,
                    sent,
                    reply: read_reply(response).await,
                });
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::with_capacity(CLIENTS * PER_CLIENT);
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    let elapsed = started.elapsed();
    let total = outcomes.len();
    assert_eq!(total, CLIENTS * PER_CLIENT);
    println!(
        "load: {total} deliveries from {CLIENTS} clients in {:.2} s = {:.0} deliveries/s; \
         heap peak {:.1} MiB above the baseline",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        (HEAP.peak_usage().saturating_sub(baseline)) as f64 / f64::from(1 << 20),
    );

    // Every handler call, by the marker its records carry.
    let mut calls: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for batch in server.received.take() {
        let records: Vec<(String, Value)> = batch
            .records()
            .iter()
            .map(|record| {
                (
                    record.hash().as_str().to_owned(),
                    record.fields().deserialize_as::<Value>().unwrap(),
                )
            })
            .collect();
        let markers: HashSet<&str> = records
            .iter()
            .map(|(_, fields)| fields["marker"].as_str().unwrap())
            .collect();
        assert_eq!(markers.len(), 1, "one batch mixes deliveries: {markers:?}");
        let marker = markers.into_iter().next().unwrap().to_owned();
        let previous = calls.insert(marker.clone(), records);
        assert!(previous.is_none(), "{marker} reached the handler twice");
    }

    let mut valid = 0;
    for outcome in &outcomes {
        match outcome.refusal {
            None => {
                valid += 1;
                outcome.reply.assert_accepted(outcome.sent.len());
                let received = calls.get(&outcome.marker);
                assert_eq!(
                    received,
                    Some(&outcome.sent),
                    "{} was acknowledged but its records never reached the handler intact",
                    outcome.marker
                );
            }
            Some(refusal) => {
                let (status, code) = refusal.answer();
                outcome.reply.assert_problem(status, code);
                assert!(
                    !calls.contains_key(&outcome.marker),
                    "{} was refused ({refusal:?}) but reached the handler",
                    outcome.marker
                );
            }
        }
    }
    assert_eq!(valid, total * 8 / 10);
    assert_eq!(
        calls.len(),
        valid,
        "handler calls that match no acknowledged delivery"
    );

    // Closing the client's pooled connections ends the server's connection tasks; what they
    // and the run held must be freed. Polled, since the server notices the closes on its own.
    drop((outcomes, calls, client, bomb));
    let mut left = HEAP.current_usage().saturating_sub(baseline);
    for _ in 0..100 {
        if left <= HEAP_MARGIN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = HEAP.current_usage().saturating_sub(baseline);
    }
    println!("load: heap {left} bytes above the baseline after the run");
    assert!(
        left <= HEAP_MARGIN,
        "{left} bytes still allocated above the baseline after the run"
    );
}
