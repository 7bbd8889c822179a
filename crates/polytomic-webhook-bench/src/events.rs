//! The organisation Events route in process: accepted events per second, and what one unsigned
//! request that inflates to 30 MiB costs (time and peak heap) before it is refused.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http::{Request, StatusCode};
use polytomic_webhook::auth::signature::sign_hex;
use polytomic_webhook::dedup::{DedupLayer, MemoryEventIdStore};
use polytomic_webhook::prelude::*;
use tower::ServiceExt;

use crate::bomb::{Measured, measure};
use crate::payload::gzip;

/// The Events webhook's signing secret in the benchmark.
pub const EVENTS_SECRET: &str = "bench-events-secret";

/// The receiver's Events route without its sink: the layer (default limits), the dedup layer
/// (an in-memory store for `capacity` ids) and the extractor.
pub fn events_router(capacity: usize) -> Router {
    let config = PolytomicOrgEventsConfig::default()
        .secrets(SigningSecrets::new(EVENTS_SECRET).unwrap_or_else(|_| unreachable!()));
    let layer = PolytomicOrgEventsLayer::new(config).unwrap_or_else(|_| unreachable!());
    Router::new()
        .route(
            "/",
            post(|event: PolytomicOrgEvent| async move { event.id().to_owned() }),
        )
        .layer(DedupLayer::new(MemoryEventIdStore::new(capacity)))
        .layer(layer)
}

/// A `sync.completed` event as Polytomic sends it, gzipped and signed: a body of about 200
/// bytes on the wire.
pub fn signed_event(id: usize) -> (Bytes, String) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let json = format!(
        r#"{{"id":"evt-{id}","organization_id":"6b7e9f0e-64b6-4f52-8f1e-0c4b5b0c9d11","type":"sync.completed","created_at":"{now}","event":{{"total_records":120,"inserted_records":100,"updated_records":20}}}}"#
    );
    let body = Bytes::from(gzip(json.as_bytes()));
    let signature = sign_hex(EVENTS_SECRET, &body);
    (body, signature)
}

/// About 428 KiB of gzip that inflates to 30 MiB (runs of 300 equal bytes, each followed by a
/// pseudo-random one: 75:1, under the ratio limit), signed with another secret.
pub fn unsigned_inflatable() -> (Bytes, String) {
    let mut rng = fastrand::Rng::with_seed(23);
    let mut data = Vec::with_capacity((30 << 20) + 301);
    while data.len() < 30 << 20 {
        data.extend_from_slice(&[b'a'; 300]);
        data.push(rng.u8(..));
    }
    let body = Bytes::from(gzip(&data));
    let signature = sign_hex("not-the-secret", &body);
    (body, signature)
}

fn request(body: Bytes, signature: &str) -> Request<axum::body::Body> {
    Request::post("/")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("polytomic-signature", signature)
        .body(axum::body::Body::from(body))
        .unwrap_or_else(|_| unreachable!())
}

/// Sends `events` one after the other; the time they took, or the first answer that was not 200.
pub async fn send_all(router: &Router, events: &[(Bytes, String)]) -> Result<Duration, String> {
    let started = Instant::now();
    for (body, signature) in events {
        let response = router
            .clone()
            .oneshot(request(body.clone(), signature))
            .await
            .unwrap_or_else(|never| match never {});
        if response.status() != StatusCode::OK {
            return Err(format!("a signed event got {}", response.status()));
        }
    }
    Ok(started.elapsed())
}

/// Sends one unsigned request and measures its time and peak heap.
pub async fn send_unsigned(
    router: &Router,
    (body, signature): &(Bytes, String),
) -> Measured<StatusCode> {
    let request = request(body.clone(), signature);
    measure(async {
        router
            .clone()
            .oneshot(request)
            .await
            .map_or(StatusCode::INTERNAL_SERVER_ERROR, |response| {
                response.status()
            })
    })
    .await
}
