//! The 1 GiB gzip bomb through the whole stack: layer, then the `SyncRecords` extractor, which
//! buffers the body. It must be refused with 413 while the heap stays under limit + 8 MiB.
//!
//! Its own test binary with a counting global allocator, holding one test so that nothing else
//! allocates while it measures.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::Write;

use axum::Router;
use axum::routing::post;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use http::{Request, StatusCode};
use peak_alloc::PeakAlloc;
use polytomic_webhook::auth::FixedClock;
use polytomic_webhook::prelude::*;
use tower::ServiceExt;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MIB: usize = 1024 * 1024;
const TIMESTAMP: &str = "2025-06-01T12:00:00Z";

/// 1 GiB of zeros through a gzip encoder, streamed: the zeros are never in memory at once.
fn gzip_bomb() -> Vec<u8> {
    let zeros = vec![0_u8; MIB];
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for _ in 0..1024 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_one_gib_gzip_bomb_is_refused_by_the_extractor_within_limit_plus_8_mib() {
    let layer = PolytomicWebhookLayer::new(
        PolytomicWebhookConfig::default().secret(Secret::new("bomb-test-secret").unwrap()),
    )
    .unwrap()
    .clock(FixedClock(TIMESTAMP.parse().unwrap()));
    let app: Router = Router::new()
        .route(
            "/",
            post(|batch: SyncRecords| async move { Ack::from(&batch) }),
        )
        .layer(layer);
    // In one frame, the whole compressed body counts as received at once, so the 100:1 ratio
    // check cannot fire before the 32 MiB decoded limit: the extractor buffers up to the limit.
    let request = Request::post("/")
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .header(AUTHORIZATION, "Bearer bomb-test-secret")
        .header("polytomic-signature-timestamp", TIMESTAMP)
        .body(axum::body::Body::from(gzip_bomb()))
        .unwrap();

    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let response = app.oneshot(request).await.unwrap();
    let peak_above_before = HEAP.peak_usage().saturating_sub(before);

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        peak_above_before < 40 * MIB,
        "peak heap {peak_above_before} bytes above what was in use before the request"
    );
}
