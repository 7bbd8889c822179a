//! The organisation Events layer in an axum `Router`, driven with `oneshot`.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Extension;
use axum::routing::post;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use http_body_util::BodyExt;
use polytomic_webhook::auth::SignatureEncoding;
use polytomic_webhook::decompression::DecompressionConfig;
use polytomic_webhook::prelude::*;
use polytomic_webhook::testing::{EventDelivery, SignedBytes, capture_logs};
use serde_json::json;
use tower::ServiceExt;

const SECRET: &str = "whsec-events-current";
const PREVIOUS: &str = "whsec-events-previous";
const ROUTE: &str = "/webhooks/polytomic/events";

type Received = Arc<Mutex<Vec<PolytomicOrgEvent>>>;

fn config() -> PolytomicOrgEventsConfig {
    PolytomicOrgEventsConfig::default().secrets(SigningSecrets::new(SECRET).unwrap())
}

fn app(config: PolytomicOrgEventsConfig) -> (Router, Received) {
    let (handler, received) = receiving();
    (
        handler.layer(PolytomicOrgEventsLayer::new(config).unwrap()),
        received,
    )
}

/// The route's handler, which keeps every event it is given, with no layer in front.
fn receiving() -> (Router, Received) {
    let received = Received::default();
    let handler = Router::new()
        .route(
            ROUTE,
            post(
                |Extension(received): Extension<Received>, event: PolytomicOrgEvent| async move {
                    received.lock().unwrap().push(event);
                    "ok"
                },
            ),
        )
        .layer(Extension(received.clone()));
    (handler, received)
}

fn delivery(kind: &str) -> EventDelivery {
    EventDelivery::new(kind).uri(ROUTE).secret(SECRET)
}

async fn status_and_code(app: &Router, request: EventDelivery) -> (StatusCode, String) {
    let response = app.clone().oneshot(request.build()).await.unwrap();
    let status = response.status();
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value == "application/problem+json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    if !is_problem {
        return (status, String::new());
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (status, json["code"].as_str().unwrap().to_owned())
}

/// Sends each request in turn and checks its status and problem code ("" for none).
async fn assert_answers(app: &Router, cases: impl IntoIterator<Item = (EventDelivery, u16, &str)>) {
    for (index, (request, status, code)) in cases.into_iter().enumerate() {
        let (got_status, got_code) = status_and_code(app, request).await;
        assert_eq!(
            (got_status.as_u16(), got_code.as_str()),
            (status, code),
            "case {index}"
        );
    }
}

#[tokio::test]
async fn every_accepted_signature_spelling_reaches_the_handler() {
    let (app, received) = app(config());
    let mut sent = 0;
    for encoding in SignatureEncoding::ALL {
        for prefixed in [false, true] {
            for (gzip, signed) in [
                (false, SignedBytes::Received),
                (true, SignedBytes::Received),
                (true, SignedBytes::Decoded),
            ] {
                let request = delivery("sync.completed")
                    .encoding(encoding)
                    .prefixed(prefixed)
                    .gzip(gzip)
                    .signed_bytes(signed);
                let (status, code) = status_and_code(&app, request).await;
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "{encoding:?} prefixed={prefixed} gzip={gzip} {signed:?}: {code}"
                );
                sent += 1;
            }
        }
    }
    assert_eq!(received.lock().unwrap().len(), sent);
}

#[tokio::test]
async fn the_span_says_which_bytes_were_signed() {
    let (app, _) = app(config());
    for (signed, expected) in [
        (SignedBytes::Received, "signed_bytes=\"received\""),
        (SignedBytes::Decoded, "signed_bytes=\"decoded\""),
    ] {
        let request = delivery("sync.failed").gzip(true).signed_bytes(signed);
        let ((status, _), logs) = capture_logs(status_and_code(&app, request)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(logs.contains(expected), "{logs}");
        assert!(logs.contains("outcome=\"accepted\""), "{logs}");
        assert!(logs.contains("event_type=\"sync.failed\""), "{logs}");
        assert!(!logs.contains(SECRET), "{logs}");
    }
}

#[tokio::test]
async fn missing_wrong_and_tampered_signatures_are_refused_before_parsing() {
    let (app, received) = app(config());
    // Not JSON at all: a refusal by the signature proves nothing was parsed first.
    let cases = [
        (
            EventDelivery::new("sync.completed")
                .uri(ROUTE)
                .malformed_json(),
            "missing_signature",
        ),
        (
            EventDelivery::new("sync.completed")
                .uri(ROUTE)
                .secret("someone-else")
                .malformed_json(),
            "invalid_signature",
        ),
        (delivery("sync.completed").tamper(), "invalid_signature"),
        (
            delivery("sync.completed").gzip(true).tamper(),
            "invalid_signature",
        ),
        (
            delivery("sync.completed")
                .gzip(true)
                .signed_bytes(SignedBytes::Decoded)
                .tamper(),
            "invalid_signature",
        ),
    ];
    for (request, expected) in cases {
        let (status, code) = status_and_code(&app, request).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, expected)
        );
    }
    // A header that decodes to nothing is refused as well.
    let mut request = delivery("sync.completed").build();
    request.headers_mut().insert(
        "polytomic-signature",
        "sha256=not-a-signature".parse().unwrap(),
    );
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_body_changed_by_one_byte_after_signing_is_refused() {
    let (app, received) = app(config());
    let (headers, body) = delivery("sync.completed").counts(3, 2, 1).encode();
    let mut changed = body.to_vec();
    let at = changed.iter().position(|&byte| byte == b'3').unwrap();
    changed[at] = b'4';
    let mut request = http::Request::post(ROUTE)
        .body(axum::body::Body::from(changed))
        .unwrap();
    *request.headers_mut() = headers;
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn rotation_accepts_the_current_and_the_previous_secret() {
    let secrets = SigningSecrets::new(SECRET).unwrap().with(PREVIOUS).unwrap();
    let (app, received) = app(PolytomicOrgEventsConfig::default().secrets(secrets));
    for secret in [SECRET, PREVIOUS] {
        let request = EventDelivery::new("sync.running").uri(ROUTE).secret(secret);
        assert_eq!(status_and_code(&app, request).await.0, StatusCode::OK);
    }
    let retired = EventDelivery::new("sync.running")
        .uri(ROUTE)
        .secret("whsec-events-retired");
    assert_eq!(
        status_and_code(&app, retired).await,
        (StatusCode::UNAUTHORIZED, "invalid_signature".to_owned())
    );
    assert_eq!(received.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn all_ten_types_and_an_unknown_one_reach_the_handler() {
    let (app, received) = app(config());
    for kind in OrgEventType::KNOWN {
        let request = delivery(kind.as_str()).id(format!("evt-{kind}"));
        assert_eq!(status_and_code(&app, request).await.0, StatusCode::OK);
    }
    let request = delivery("sync.paused").id("evt-unknown");
    assert_eq!(status_and_code(&app, request).await.0, StatusCode::OK);
    let received = received.lock().unwrap();
    let kinds: Vec<OrgEventType> = received.iter().map(|event| event.kind().clone()).collect();
    let mut expected = OrgEventType::KNOWN.to_vec();
    expected.push(OrgEventType::Other("sync.paused".to_owned()));
    assert_eq!(kinds, expected);
}

#[tokio::test]
async fn sync_completed_counts_are_typed_through_the_layer() {
    let app = Router::new()
        .route(
            ROUTE,
            post(|event: PolytomicOrgEvent<CompletionCounts>| async move {
                let counts = event.payload();
                axum::Json(json!([
                    counts.total_records,
                    counts.inserted_records,
                    counts.updated_records
                ]))
            }),
        )
        .layer(PolytomicOrgEventsLayer::new(config()).unwrap());
    let request = delivery("sync.completed")
        .payload(json!({"logs": {"inserted": "https://example.com/i.json"}}))
        .counts(120, 100, 20)
        .gzip(true)
        .build();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"[120,100,20]");
}

#[tokio::test]
async fn hostile_bodies_are_bounded_like_sync_records() {
    let mut small = DecompressionConfig::default();
    small.max_compressed_bytes = 64 * 1024;
    let (app, received) = app(config().decompression(small));
    let huge_payload = json!({"blob": "x".repeat(100 * 1024)});
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases = [
        // A signed bomb (32 MiB of zeros, 32 KiB gzipped): the ratio limit stops the inflation.
        (
            delivery("sync.completed").bomb(32 << 20),
            413,
            "body_too_large",
        ),
        // The same bomb unsigned: the search for a match over the decoded bytes stops at the
        // same limit and says nothing about it.
        (
            EventDelivery::new("sync.completed")
                .uri(ROUTE)
                .secret("someone-else")
                .bomb(32 << 20),
            401,
            "invalid_signature",
        ),
        // More than `max_compressed_bytes` as received, signed or not.
        (
            delivery("sync.completed").payload(huge_payload.clone()),
            413,
            "body_too_large",
        ),
        (
            EventDelivery::new("sync.completed")
                .uri(ROUTE)
                .secret("someone-else")
                .payload(huge_payload),
            413,
            "body_too_large",
        ),
        (
            delivery("sync.completed").malformed_json(),
            400,
            "invalid_json",
        ),
        (
            delivery("sync.completed").raw_json(deep.as_bytes()),
            422,
            "invalid_envelope",
        ),
        (
            delivery("sync.completed").raw_json(&deep.as_bytes()[..deep.len() - 1]),
            400,
            "invalid_json",
        ),
        (
            delivery("sync.completed").raw_json(br#"{"id":"e","type":"sync.completed"}"#),
            422,
            "invalid_envelope",
        ),
    ];
    assert_answers(&app, cases).await;
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_signed_body_that_is_not_json_media_is_415() {
    let (app, _) = app(config());
    let mut request = delivery("sync.completed").build();
    request
        .headers_mut()
        .insert(CONTENT_TYPE, "text/plain".parse().unwrap());
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[test]
fn the_layer_needs_a_secret_and_never_shows_it() {
    let error = PolytomicOrgEventsLayer::new(PolytomicOrgEventsConfig::default()).unwrap_err();
    assert_eq!(error, polytomic_webhook::ConfigError::NoSigningSecret);
    let layer = PolytomicOrgEventsLayer::new(config()).unwrap();
    let debug = format!("{layer:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("len: 1"), "{debug}");
}

/// A request body that fails the test if anything polls it, declaring 1 GiB (more than the
/// drain would read, so a refusal leaves it alone).
struct MustNotBeRead;

impl http_body::Body for MustNotBeRead {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        panic!("the body was read");
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(1 << 30)
    }
}

/// Headers to add to a request.
type Headers = Vec<(&'static str, http::HeaderValue)>;

#[tokio::test]
async fn head_refusals_never_read_the_body() {
    let (app, received) = app(config());
    let signature = delivery("sync.completed").encode().0["polytomic-signature"].clone();
    let cases: [(Headers, StatusCode, &str); 4] = [
        (vec![], StatusCode::UNAUTHORIZED, "missing_signature"),
        (
            vec![("polytomic-signature", "sha256=zz".parse().unwrap())],
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
        ),
        (
            vec![
                ("polytomic-signature", signature.clone()),
                ("content-encoding", "compress".parse().unwrap()),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_encoding",
        ),
        (
            vec![
                ("polytomic-signature", signature),
                ("content-length", "1073741824".parse().unwrap()),
            ],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (headers, status, code) in cases {
        let mut request = http::Request::post(ROUTE)
            .header(CONTENT_TYPE, "application/json")
            .body(axum::body::Body::new(MustNotBeRead))
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(name, value);
        }
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(response.headers()["connection"], "close", "{code}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], code);
    }
    assert!(received.lock().unwrap().is_empty());
}

/// The table in the `testing` module's docs, with the layer's defaults.
#[tokio::test]
async fn the_testing_helpers_get_the_documented_answers() {
    let (app, received) = app(config());
    let cases = [
        (
            EventDelivery::new("sync.completed").uri(ROUTE),
            401,
            "missing_signature",
        ),
        (
            delivery("sync.completed").tamper(),
            401,
            "invalid_signature",
        ),
        (
            delivery("sync.completed").bomb(32 << 20),
            413,
            "body_too_large",
        ),
        (
            delivery("sync.completed").malformed_json(),
            400,
            "invalid_json",
        ),
    ];
    assert_answers(&app, cases).await;
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_allowlist_refuses_a_sender_outside_it_before_the_signature_is_read() {
    let allowlist: polytomic_webhook::auth::allowlist::AllowlistConfig =
        serde_json::from_value(json!({"allow": ["203.0.113.0/24"]})).unwrap();
    let mut config = config();
    config.allowlist = Some(allowlist);
    let (app, received) = app(config);
    let from = |peer: &str, delivery: EventDelivery| {
        let mut request = delivery.build();
        request
            .extensions_mut()
            .insert(polytomic_webhook::auth::PeerAddr(peer.parse().unwrap()));
        request
    };
    let outside = from(
        "198.51.100.7:4000",
        delivery("sync.completed").secret("wrong"),
    );
    let response = app.clone().oneshot(outside).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "source_ip_not_allowed");

    let inside = from("203.0.113.9:4000", delivery("sync.completed"));
    let response = app.clone().oneshot(inside).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(received.lock().unwrap().len(), 1);
}

/// `len` bytes of JSON-safe text that gzip shrinks about fourfold, far under the 100:1 ratio
/// limit: only a size limit stops it.
fn incompressible(len: usize) -> String {
    let mut state = 0x9e37_79b9_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            ['a', 'c', 'g', 't'][(state % 4) as usize]
        })
        .collect()
}

#[tokio::test]
async fn the_events_route_has_limits_of_its_own_much_smaller_than_batches() {
    let (events, received) = app(config());
    let blob = |len: usize| json!({ "blob": incompressible(len) });
    let cases = [
        // Within 1 MiB as received and decoded.
        (delivery("sync.failed").payload(blob(900 << 10)), 200, ""),
        // Over 1 MiB as received (32 MiB used to be accepted), signed or not.
        (
            delivery("sync.failed").payload(blob(1100 << 10)),
            413,
            "body_too_large",
        ),
        // Under 1 MiB gzipped, 1.2 MiB decoded: refused while it is kept, signed over the
        // bytes as received...
        (
            delivery("sync.failed").payload(blob(1200 << 10)).gzip(true),
            413,
            "body_too_large",
        ),
        // ...and, over the decoded bytes, never matched: the HMAC stops at the limit.
        (
            delivery("sync.failed")
                .payload(blob(1200 << 10))
                .gzip(true)
                .signed_bytes(SignedBytes::Decoded),
            401,
            "invalid_signature",
        ),
    ];
    assert_answers(&events, cases).await;
    assert_eq!(received.lock().unwrap().len(), 1);

    // Raised, the same events are accepted.
    let raised = config()
        .max_received_bytes(4 << 20)
        .max_decoded_bytes(4 << 20);
    let (raised, received) = app(raised);
    for request in [
        delivery("sync.failed").payload(blob(1100 << 10)),
        delivery("sync.failed")
            .payload(blob(1200 << 10))
            .gzip(true)
            .signed_bytes(SignedBytes::Decoded),
    ] {
        assert_eq!(status_and_code(&raised, request).await.0, StatusCode::OK);
    }
    assert_eq!(received.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn signed_events_too_old_or_too_far_ahead_are_refused_with_their_codes() {
    use chrono::{TimeDelta, Utc};

    let (events, received) = app(config());
    let dated = |offset: TimeDelta| delivery("sync.completed").created_at(Utc::now() + offset);
    let cases = [
        // Within the default window: seven days (the dedup TTL) back, five minutes ahead.
        (dated(-TimeDelta::days(6)), 200, ""),
        (dated(TimeDelta::minutes(4)), 200, ""),
        (dated(-TimeDelta::days(8)), 422, "stale_event"),
        (dated(-TimeDelta::days(365 * 7)), 422, "stale_event"),
        (dated(TimeDelta::minutes(6)), 422, "event_in_future"),
        (dated(TimeDelta::days(365 * 73)), 422, "event_in_future"),
        // Signed over the decoded bytes, the same rule.
        (
            dated(-TimeDelta::days(8))
                .gzip(true)
                .signed_bytes(SignedBytes::Decoded),
            422,
            "stale_event",
        ),
    ];
    assert_answers(&events, cases).await;
    assert_eq!(received.lock().unwrap().len(), 2);

    // Configurable: an hour back, nothing ahead; or no window at all.
    let (narrow, _) = app(config()
        .max_event_age(Some(std::time::Duration::from_secs(3600)))
        .max_event_skew(Some(std::time::Duration::ZERO)));
    let (status, code) = status_and_code(&narrow, dated(-TimeDelta::hours(2))).await;
    assert_eq!((status.as_u16(), code.as_str()), (422, "stale_event"));
    let (status, code) = status_and_code(&narrow, dated(TimeDelta::seconds(30))).await;
    assert_eq!((status.as_u16(), code.as_str()), (422, "event_in_future"));
    let (open, _) = app(config().max_event_age(None).max_event_skew(None));
    for offset in [-TimeDelta::days(365 * 7), TimeDelta::days(365)] {
        assert_eq!(
            status_and_code(&open, dated(offset)).await.0,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn an_accepted_event_is_parsed_once_through_dedup_and_the_extractor() {
    use polytomic_webhook::dedup::{DedupLayer, MemoryEventIdStore};
    use polytomic_webhook_event::org::org_event_parses;

    let (handler, received) = receiving();
    let app = handler
        .layer(DedupLayer::new(MemoryEventIdStore::new(100)))
        .layer(PolytomicOrgEventsLayer::new(config()).unwrap());
    for (id, gzip, signed) in [
        ("evt-plain", false, SignedBytes::Received),
        ("evt-gzip", true, SignedBytes::Received),
        ("evt-decoded", true, SignedBytes::Decoded),
    ] {
        let request = delivery("sync.completed")
            .id(id)
            .counts(3, 2, 1)
            .gzip(gzip)
            .signed_bytes(signed);
        // The test runtime has one thread, where every parse of this request happens.
        let before = org_event_parses();
        assert_eq!(status_and_code(&app, request).await.0, StatusCode::OK);
        assert_eq!(org_event_parses() - before, 1, "{id}");
    }
    let received = received.lock().unwrap();
    let ids: Vec<&str> = received.iter().map(PolytomicOrgEvent::id).collect();
    assert_eq!(ids, ["evt-plain", "evt-gzip", "evt-decoded"]);
}

#[tokio::test]
async fn a_signed_event_draws_from_the_decoded_budget_and_an_unsigned_one_does_not() {
    use polytomic_webhook::limit::{DecodedBudgetLayer, PER_DELIVERY_RESERVE, ServerLimits};

    let app_with = |budget: u64| {
        let budget =
            DecodedBudgetLayer::new(&ServerLimits::default().max_decoded_in_flight(budget));
        let layer = PolytomicOrgEventsLayer::new(config())
            .unwrap()
            .decoded_budget(&budget);
        let (handler, received) = receiving();
        (handler.layer(layer), received)
    };
    // Less than one event's reserve: every signed event is refused, none reaches the handler.
    let (app, received) = app_with(PER_DELIVERY_RESERVE - 1);
    let (status, code) = status_and_code(&app, delivery("sync.completed")).await;
    assert_eq!((status.as_u16(), code.as_str()), (503, "overloaded"));
    assert!(received.lock().unwrap().is_empty());
    // Room for one event at a time: each gives its share back once answered, and unsigned
    // requests, refused before they keep anything, take none.
    let (app, received) = app_with(PER_DELIVERY_RESERVE + (64 << 10));
    for id in ["evt-1", "evt-2", "evt-3"] {
        let unsigned = EventDelivery::new("sync.completed")
            .uri(ROUTE)
            .secret("someone-else");
        let (status, code) = status_and_code(&app, unsigned).await;
        assert_eq!((status.as_u16(), code.as_str()), (401, "invalid_signature"));
        let request = delivery("sync.completed").id(id).gzip(true);
        assert_eq!(
            status_and_code(&app, request).await.0,
            StatusCode::OK,
            "{id}"
        );
    }
    assert_eq!(received.lock().unwrap().len(), 3);
}
