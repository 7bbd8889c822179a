//! `read` and `read_event`: the extractors' work on any `http::Request`, outside axum. No
//! composed layer admits these requests, so the tests read them `_without_layer`, except the
//! one that shows `read` itself refusing them.
#![allow(clippy::unwrap_used)] // Tests and their helpers panic on unexpected outcomes by design.

mod common;

use std::sync::{Arc, Mutex};

use axum_core::response::IntoResponse;
use bytes::Bytes;
use common::{SAMPLE, SYNC_ID, answer, envelope, streamed};
use http_body_util::Full;
use polytomic_webhook_core::body::{BodyLimit, BodyStats, length_limit_error};
use polytomic_webhook_event::{
    BatchObserver, EventConfig, EventRejection, Fields, PolytomicEvent, RawFields, SyncRecords,
    UnknownEventPolicy, read, read_event, read_event_without_layer, read_without_layer,
};

/// A JSON `POST` request whose body is `body`, of whatever type: no axum `Body` involved.
fn post<B>(body: B) -> http::Request<B> {
    http::Request::post("/")
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn full(body: impl Into<Bytes>) -> http::Request<Full<Bytes>> {
    post(Full::new(body.into()))
}

async fn assert_problem(
    result: Result<SyncRecords<Fields>, EventRejection>,
    status: u16,
    code: &str,
) {
    let rejection = result.map(|batch| batch.len()).unwrap_err();
    answer(rejection.into_response())
        .await
        .assert_problem(status, code);
}

/// A batch whose sync id is not a UUID: refused under the default configuration only.
fn relaxed_body() -> String {
    envelope("[]").replace(SYNC_ID, "sync-42")
}

#[tokio::test]
async fn a_request_without_event_config_is_read_under_the_defaults() {
    assert!(EventConfig::default().require_uuid_sync_id);
    assert_problem(
        read_without_layer(full(relaxed_body())).await,
        422,
        "invalid_envelope",
    )
    .await;

    let mut configured = full(relaxed_body());
    configured
        .extensions_mut()
        .insert(EventConfig::default().require_uuid_sync_id(false));
    let batch = read_without_layer::<Fields, _>(configured).await.unwrap();
    assert_eq!(batch.id().as_str(), "sync-42");
}

#[tokio::test]
async fn read_checks_the_content_type_and_parses_like_the_extractor() {
    let batch = read_without_layer::<RawFields, _>(full(SAMPLE))
        .await
        .unwrap();
    assert_eq!(batch.id().as_str(), SYNC_ID);
    assert_eq!(batch.len(), 1);
    assert_eq!(
        batch.records()[0].fields().get("email").unwrap().get(),
        r#""nathan@polytomic.com""#
    );

    let mut text = full(SAMPLE);
    text.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    assert_problem(
        read_without_layer(text).await,
        415,
        "unsupported_media_type",
    )
    .await;

    assert_problem(
        read_without_layer(full("{\"event\":")).await,
        400,
        "invalid_json",
    )
    .await;

    let mut small = full(SAMPLE);
    small
        .extensions_mut()
        .insert(EventConfig::default().max_body_bytes(SAMPLE.len() - 1));
    assert_problem(read_without_layer(small).await, 413, "body_too_large").await;
}

#[tokio::test]
async fn read_names_the_decompression_limit_that_stopped_the_body() {
    let mut request = streamed(vec![
        Ok(Bytes::from_static(b"{")),
        Err(length_limit_error()),
    ]);
    let stats = BodyStats::new();
    stats.set_exceeded_with_value(BodyLimit::Decompressed, 4096);
    request.extensions_mut().insert(stats);
    let rejection = read_without_layer::<Fields, _>(request).await.unwrap_err();
    let reply = answer(rejection.into_response()).await;
    reply.assert_problem(413, "body_too_large");
    assert_eq!(reply.body["limit"], "decompressed");
}

#[tokio::test]
async fn unknown_events_are_refused_by_read_and_returned_by_read_event() {
    let unknown = r#"{"event":"sync.other","object":{"a":1}}"#;
    let mut rejecting = full(unknown);
    rejecting
        .extensions_mut()
        .insert(EventConfig::default().unknown_events(UnknownEventPolicy::Reject));
    assert_problem(read_without_layer(rejecting).await, 422, "unknown_event").await;
    // Acknowledged by default: a 200 answer, but still no batch.
    let acknowledged = read_without_layer::<Fields, _>(full(unknown))
        .await
        .unwrap_err();
    assert_eq!(acknowledged.into_response().status(), 200);

    let event = read_event_without_layer::<Fields, _>(full(unknown))
        .await
        .unwrap();
    assert!(matches!(event, PolytomicEvent::Unknown { ref event, .. } if event == "sync.other"));
}

/// An observer that keeps what it is told, as `(sync id, sync name, record count)`.
fn observed(request: &mut http::Request<Full<Bytes>>) -> Arc<Mutex<Vec<(String, String, usize)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    request
        .extensions_mut()
        .insert(BatchObserver::new(move |batch| {
            sink.lock().unwrap().push((
                batch.sync_id.as_str().to_owned(),
                batch.sync_name.to_owned(),
                batch.record_count,
            ));
        }));
    seen
}

#[tokio::test]
async fn the_observer_hears_of_each_accepted_batch_and_nothing_else() {
    let expected = vec![(
        SYNC_ID.to_owned(),
        "Webhook HTTP Endpoint sync".to_owned(),
        1,
    )];

    let mut request = full(SAMPLE);
    let seen = observed(&mut request);
    read_without_layer::<RawFields, _>(request).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), expected);

    let mut request = full(SAMPLE);
    let seen = observed(&mut request);
    read_event_without_layer::<RawFields, _>(request)
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), expected);

    let refused = envelope(r#"[{"hash":"h"}]"#);
    let unknown = r#"{"event":"sync.other","object":{}}"#;
    for body in [refused.as_str(), unknown] {
        let mut request = full(body.to_owned());
        let seen = observed(&mut request);
        let _ = read_without_layer::<Fields, _>(request).await;
        let mut again = full(body.to_owned());
        let seen_by_event = observed(&mut again);
        let _ = read_event_without_layer::<Fields, _>(again).await;
        assert!(seen.lock().unwrap().is_empty(), "{body}");
        assert!(seen_by_event.lock().unwrap().is_empty(), "{body}");
    }
}

#[tokio::test]
async fn read_and_read_event_refuse_a_request_no_layer_admitted_without_reading_its_body() {
    // A body that fails at once: reading it would be answered 400 `body_read_failed`.
    let failing = || streamed(vec![Err("must not be read".into())]);
    assert_problem(read(failing()).await, 500, "layer_missing").await;
    let rejection = read_event::<Fields, _>(failing()).await.unwrap_err();
    let reply = answer(rejection.into_response()).await;
    reply.assert_problem(500, "layer_missing");
    assert!(
        reply.detail().contains("PolytomicWebhookLayer"),
        "{}",
        reply.detail()
    );
    // The same request, read on purpose: its body is read, and fails.
    assert_problem(read_without_layer(failing()).await, 400, "body_read_failed").await;
    // A client cannot admit its own request: no header stands for the layer.
    let mut forged = full(SAMPLE);
    forged
        .headers_mut()
        .insert("x-polytomic-webhook-admitted", "1".parse().unwrap());
    forged.extensions_mut().insert(EventConfig::default());
    assert_problem(read(forged).await, 500, "layer_missing").await;
}
