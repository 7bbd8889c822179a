//! The extractors end to end: content type, body reading and limits, unknown events, handlers.
#![allow(clippy::unwrap_used)] // Tests and their helpers panic on unexpected outcomes by design.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum::{Extension, Router};
use axum_core::body::Body;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use common::{SAMPLE, SYNC_ID, answer, envelope, extract, request, streamed};
use polytomic_webhook_core::body::{
    BodyLimit, BodyStats, InvalidCompressedBody, length_limit_error,
};
use polytomic_webhook_event::{
    Ack, EventConfig, Fields, PolytomicEvent, SyncRecords, UnknownEventPolicy, WithoutLayer,
};
use tower::ServiceExt;

#[derive(Debug, PartialEq, serde::Deserialize)]
struct User {
    email: String,
    last_login: DateTime<Utc>,
}

/// A router whose handler counts its calls.
fn app(calls: Arc<AtomicUsize>) -> Router {
    Router::new().route(
        "/",
        post(
            move |WithoutLayer(batch): WithoutLayer<SyncRecords<User>>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ack::from(&batch)
            },
        ),
    )
}

#[tokio::test]
async fn sample_body_reaches_a_typed_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let response = app(calls.clone()).oneshot(request(SAMPLE)).await.unwrap();
    let reply = answer(response).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(reply.body, serde_json::json!({"accepted": 1}));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let batch = extract::<SyncRecords<User>>(request(SAMPLE)).await.unwrap();
    assert_eq!(batch.id().as_str(), SYNC_ID);
    assert_eq!(batch.name(), "Webhook HTTP Endpoint sync");
    assert_eq!(batch.records()[0].hash(), "b7421c6c57bd49f7");
    assert_eq!(
        *batch.records()[0].fields(),
        User {
            email: "nathan@polytomic.com".into(),
            last_login: Utc.with_ymd_and_hms(2020, 12, 2, 0, 0, 0).unwrap(),
        }
    );
}

#[tokio::test]
async fn empty_batch_runs_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let response = app(calls.clone())
        .oneshot(request(envelope("[]")))
        .await
        .unwrap();
    let reply = answer(response).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, serde_json::json!({"accepted": 0}));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

const FUTURE: &str = r#"{"event":"sync.future_thing","object":{"whatever":[1,2,3]}}"#;

#[tokio::test]
async fn unknown_event_is_acknowledged_without_running_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let response = app(calls.clone()).oneshot(request(FUTURE)).await.unwrap();
    let reply = answer(response).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(
        reply.body,
        serde_json::json!({"ignored_event": "sync.future_thing"})
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unknown_event_is_rejected_under_the_reject_policy() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = EventConfig::default().unknown_events(UnknownEventPolicy::Reject);
    let response = app(calls.clone())
        .layer(Extension(config))
        .oneshot(request(FUTURE))
        .await
        .unwrap();
    let reply = answer(response).await;
    reply.assert_problem(422, "unknown_event");
    assert_eq!(reply.body["event"], "sync.future_thing");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn polytomic_event_extractor_returns_unknown_events() {
    let config = EventConfig::default().unknown_events(UnknownEventPolicy::Reject);
    let mut req = request(FUTURE);
    req.extensions_mut().insert(config);
    let event = extract::<PolytomicEvent>(req).await.unwrap();
    match event {
        PolytomicEvent::Unknown { event, object } => {
            assert_eq!(event, "sync.future_thing");
            assert_eq!(
                object.deserialize_as::<serde_json::Value>().unwrap(),
                serde_json::json!({"whatever": [1, 2, 3]})
            );
        }
        other => panic!("expected an unknown event, got {other:?}"),
    }
}

#[tokio::test]
async fn content_type_must_be_json() {
    // The detail says what was received, so the sender knows what to change.
    for (content_type, received) in [
        (None, "has no Content-Type"),
        (Some("text/plain"), "is text/plain, not JSON"),
        (
            Some("application/x-www-form-urlencoded"),
            "is application/x-www-form-urlencoded, a form type (what `curl -d` sends",
        ),
    ] {
        let mut builder = http::Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        let req = builder.body(Body::from(SAMPLE)).unwrap();
        let response = extract::<SyncRecords>(req).await.unwrap_err();
        let reply = answer(response).await;
        reply.assert_problem(415, "unsupported_media_type");
        assert!(reply.detail().contains(received), "{}", reply.detail());
        assert!(
            reply.detail().ends_with("application/json')")
                || reply.detail().ends_with("Content-Type: application/json"),
            "{}",
            reply.detail()
        );
    }
    for content_type in ["application/json; charset=utf-8", "application/vnd.x+json"] {
        let req = http::Request::builder()
            .method("POST")
            .header("content-type", content_type)
            .body(Body::from(SAMPLE))
            .unwrap();
        assert!(extract::<SyncRecords>(req).await.is_ok(), "{content_type}");
    }
}

#[tokio::test]
async fn axum_default_body_limit_is_honoured_and_extensions_survive() {
    let calls = Arc::new(AtomicUsize::new(0));
    // The extension layer is outermost, so the config reaches the extractor only if reading the
    // limited body keeps the request's extensions.
    let config = EventConfig::default().unknown_events(UnknownEventPolicy::Reject);
    let router = app(calls.clone())
        .layer(DefaultBodyLimit::max(SAMPLE.len() - 1))
        .layer(Extension(config));
    let reply = answer(router.clone().oneshot(request(SAMPLE)).await.unwrap()).await;
    reply.assert_problem(413, "body_too_large");
    assert_eq!(reply.body["limit"], "body");
    assert!(reply.detail().contains("body size limit"));

    let reply = answer(router.oneshot(request(FUTURE)).await.unwrap()).await;
    reply.assert_problem(422, "unknown_event");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn own_body_limit_applies_without_other_limits() {
    let mut req = request(SAMPLE);
    req.extensions_mut()
        .insert(EventConfig::default().max_body_bytes(SAMPLE.len() - 1));
    let response = extract::<SyncRecords>(req).await.unwrap_err();
    let reply = answer(response).await;
    reply.assert_problem(413, "body_too_large");
    assert_eq!(reply.body["limit"], "extractor");
    assert!(reply.detail().contains(&(SAMPLE.len() - 1).to_string()));

    // Also when the body's size is unknown in advance and arrives in pieces.
    let (head, tail) = SAMPLE.split_at(10);
    let mut req = streamed(vec![
        Ok(Bytes::from_static(head.as_bytes())),
        Ok(Bytes::from_static(tail.as_bytes())),
    ]);
    req.extensions_mut()
        .insert(EventConfig::default().max_body_bytes(SAMPLE.len() - 1));
    let response = extract::<SyncRecords>(req).await.unwrap_err();
    answer(response).await.assert_problem(413, "body_too_large");

    let mut req = request(SAMPLE);
    req.extensions_mut()
        .insert(EventConfig::default().max_body_bytes(SAMPLE.len()));
    assert!(extract::<SyncRecords>(req).await.is_ok());
}

#[tokio::test]
async fn multi_frame_bodies_are_joined() {
    let pieces: Vec<_> = SAMPLE
        .as_bytes()
        .chunks(7)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    let batch = extract::<SyncRecords<User>>(streamed(pieces))
        .await
        .unwrap();
    assert_eq!(batch.records()[0].fields().email, "nathan@polytomic.com");
}

#[tokio::test]
async fn decompression_limit_is_named_from_body_stats() {
    let stats = BodyStats::new();
    let mut req = streamed(vec![
        Ok(Bytes::from_static(b"{\"ev")),
        Err(length_limit_error()),
    ]);
    req.extensions_mut().insert(stats.clone());
    // The layer records the limit while the body is read, after the extractor took the stats.
    stats.set_exceeded_with_value(BodyLimit::Decompressed, 4096);
    let response = extract::<SyncRecords>(req).await.unwrap_err();
    let reply = answer(response).await;
    reply.assert_problem(413, "body_too_large");
    assert_eq!(reply.body["limit"], "decompressed");
    assert!(
        reply.detail().contains("decompressed body size limit"),
        "{}",
        reply.detail()
    );
    assert!(reply.detail().contains("4096"));

    let stats = BodyStats::new();
    stats.set_exceeded(BodyLimit::Ratio);
    let mut req = streamed(vec![Err(length_limit_error())]);
    req.extensions_mut().insert(stats);
    let reply = answer(extract::<SyncRecords>(req).await.unwrap_err()).await;
    reply.assert_problem(413, "body_too_large");
    assert_eq!(reply.body["limit"], "ratio");
    assert!(reply.detail().contains("ratio"));
}

#[tokio::test]
async fn corrupt_compressed_body_is_400() {
    let error = InvalidCompressedBody::new(
        "gzip",
        io::Error::new(io::ErrorKind::InvalidData, "invalid gzip header"),
    );
    let req = streamed(vec![Err(Box::new(error))]);
    let reply = answer(extract::<SyncRecords>(req).await.unwrap_err()).await;
    reply.assert_problem(400, "invalid_compressed_body");
    assert!(reply.detail().contains("gzip"));
}

#[tokio::test]
async fn other_body_errors_are_400() {
    let req = streamed(vec![
        Ok(Bytes::from_static(b"{")),
        Err(Box::new(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset",
        ))),
    ]);
    let reply = answer(extract::<SyncRecords>(req).await.unwrap_err()).await;
    reply.assert_problem(400, "body_read_failed");
}

#[tokio::test]
async fn parse_rejections_render_as_problems() {
    let cases: &[(&str, u16, &str)] = &[
        ("{", 400, "invalid_json"),
        ("[]", 422, "invalid_envelope"),
        (
            r#"[{"hash":"h","fields":{"email":1}}]"#,
            422,
            "invalid_record_fields",
        ),
    ];
    for (records_or_body, status, code) in cases {
        let body = if records_or_body.starts_with('[') && *code != "invalid_envelope" {
            envelope(records_or_body)
        } else {
            (*records_or_body).to_owned()
        };
        let response = extract::<SyncRecords<User>>(request(body))
            .await
            .unwrap_err();
        answer(response).await.assert_problem(*status, code);
    }

    let mut req = request(envelope(
        r#"[{"hash":"a","fields":{}},{"hash":"b","fields":{}}]"#,
    ));
    req.extensions_mut()
        .insert(EventConfig::default().max_records(1));
    let reply = answer(extract::<SyncRecords>(req).await.unwrap_err()).await;
    reply.assert_problem(413, "too_many_records");

    let mut req = request(envelope(r#"[{"hash":"a","fields":{"$a":1,"a":2}}]"#));
    req.extensions_mut()
        .insert(EventConfig::default().normalize_field_names(true));
    let reply = answer(extract::<SyncRecords<Fields>>(req).await.unwrap_err()).await;
    reply.assert_problem(422, "field_name_collision");
    assert_eq!(reply.path(), "object.records[0].fields");
}

#[tokio::test]
async fn every_extractor_refuses_a_request_no_layer_admitted_before_reading_it() {
    use polytomic_webhook_event::org::PolytomicOrgEvent;
    // A body that fails at once: reading it would be answered 400 `body_read_failed`.
    let failing = || streamed(vec![Err(io::Error::other("must not be read").into())]);
    async fn refused<E: axum_core::extract::FromRequest<()>>(req: axum_core::extract::Request)
    where
        E::Rejection: axum_core::response::IntoResponse,
    {
        use axum_core::response::IntoResponse;
        let Err(rejection) = E::from_request(req, &()).await else {
            panic!("extracted without the layer");
        };
        let reply = answer(rejection.into_response()).await;
        reply.assert_problem(500, "layer_missing");
    }
    refused::<SyncRecords>(failing()).await;
    refused::<PolytomicEvent>(failing()).await;
    refused::<PolytomicOrgEvent>(failing()).await;
    // The handler of a router without the layer never runs, for a valid body too.
    let calls = Arc::new(AtomicUsize::new(0));
    let unwrapped = Router::new().route(
        "/",
        post({
            let calls = Arc::clone(&calls);
            move |batch: SyncRecords| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ack::from(&batch)
            }
        }),
    );
    let reply = answer(unwrapped.oneshot(request(SAMPLE)).await.unwrap()).await;
    reply.assert_problem(500, "layer_missing");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // `WithoutLayer` reads the same failing body on purpose.
    let response = extract::<SyncRecords>(failing()).await.unwrap_err();
    answer(response)
        .await
        .assert_problem(400, "body_read_failed");
}
