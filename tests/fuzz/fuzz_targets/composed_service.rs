//! The whole composed service, through `oneshot`, with arbitrary headers and body.
//!
//! Input: byte 0 chooses the headers (bits 0-1 `Authorization`: the secret, none, a wrong one,
//! the secret with a lowercase scheme; bits 2-3 timestamp: now, none, stale, garbage; bit 4:
//! gzip the body; bits 5-6 `Content-Encoding`: none, gzip, identity, br; bit 7: a non-JSON
//! `Content-Type`), byte 1 the frame size (0: one frame); the rest is the body. Seeds are
//! real deliveries.
//!
//! Invariants: never a panic and never a 5xx; every answer but an accepted one carries a
//! problem code; an accepted batch holds exactly what an independent decoder (flate2 and
//! serde_json) finds in the same bytes; the heap stays within the limits plus a fixed margin.
#![no_main]

#[path = "common.rs"]
mod common;

use std::cell::RefCell;
use std::convert::Infallible;

use axum_core::extract::FromRequest;
use bytes::Bytes;
use common::{Frames, answer_within, coding_from_bits, gunzip, gzip, rejection_response};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use polytomic_webhook::auth::FixedClock;
use polytomic_webhook::event::{Fields, SyncRecords, parse_sync_records};
use polytomic_webhook::prelude::*;
use polytomic_webhook::{DeliveryBody, PolytomicWebhook};
use tower::{Layer, ServiceExt, service_fn};

const SECRET: &str = "fuzz-secret";
const NOW: &str = "2026-01-02T03:04:05Z";
const LIMIT: u64 = 256 * 1024;

type Handler = tower::util::ServiceFn<
    fn(
        Request<DeliveryBody<Frames>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>>>>,
>;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    static ACCEPTED: RefCell<Option<SyncRecords<Fields>>> = const { RefCell::new(None) };
    static SERVICE: PolytomicWebhook<Handler, FixedClock> = {
        let mut config = PolytomicWebhookConfig::default().secret(Secret::new(SECRET).unwrap());
        config.decompression.max_decompressed_bytes = LIMIT;
        config.decompression.max_compressed_bytes = LIMIT;
        let layer = PolytomicWebhookLayer::new(config)
            .unwrap()
            .clock(FixedClock(NOW.parse().unwrap()));
        layer.layer(service_fn(handler as fn(_) -> _))
    };
}

/// What a handler taking `SyncRecords` does: extract, or answer with the rejection.
fn handler(
    request: Request<DeliveryBody<Frames>>,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>>>> {
    Box::pin(async move {
        let request = request.map(axum_core::body::Body::new);
        Ok(
            match SyncRecords::<Fields>::from_request(request, &()).await {
                Ok(batch) => {
                    ACCEPTED.with(|slot| *slot.borrow_mut() = Some(batch));
                    Response::new(Full::new(Bytes::from_static(b"{}")))
                }
                Err(rejection) => rejection_response(rejection).await,
            },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let [flags, frame_size, payload @ ..] = data else {
        return;
    };
    let body = if flags & 0x10 != 0 {
        gzip(payload)
    } else {
        payload.to_vec()
    };
    let mut request = Request::post("/webhooks/polytomic");
    request = match flags & 0b11 {
        0 => request.header("authorization", format!("Bearer {SECRET}")),
        1 => request,
        2 => request.header("authorization", "Bearer not-the-secret"),
        _ => request.header("authorization", format!("bearer  {SECRET} ")),
    };
    request = match (flags >> 2) & 0b11 {
        0 => request.header("polytomic-signature-timestamp", NOW),
        1 => request,
        2 => request.header("polytomic-signature-timestamp", "2026-01-02T02:00:00Z"),
        _ => request.header("polytomic-signature-timestamp", "1767323045"),
    };
    let content_encoding = coding_from_bits(flags >> 5);
    if let Some(value) = content_encoding {
        request = request.header("content-encoding", value);
    }
    let content_type = if flags & 0x80 != 0 {
        "text/plain"
    } else {
        "application/json"
    };
    let request = request
        .header("content-type", content_type)
        .body(Frames::chunks(&body, usize::from(*frame_size), false))
        .unwrap();

    ACCEPTED.with(|slot| slot.borrow_mut().take());
    let service = SERVICE.with(Clone::clone);
    let status =
        RUNTIME.with(|runtime| answer_within(runtime, service.oneshot(request), 2 * LIMIT));
    let accepted = ACCEPTED.with(|slot| slot.borrow_mut().take());
    if status != StatusCode::OK {
        assert!(accepted.is_none());
        return;
    }
    let Some(batch) = accepted else {
        return; // An acknowledged unknown event.
    };
    // What an independent receiver makes of the same bytes: gunzip if they are gzip, parse.
    let plain = match content_encoding {
        Some("gzip") => gunzip(&body).expect("accepted gzip decodes independently"),
        _ => gunzip(&body).unwrap_or(body),
    };
    let reference: serde_json::Value =
        serde_json::from_slice(&plain).expect("accepted bytes are JSON");
    let independent = parse_sync_records::<Fields>(&plain, &Default::default())
        .expect("accepted bytes parse independently");
    assert_eq!(batch, independent);
    assert_eq!(
        reference["object"]["records"].as_array().map(Vec::len),
        Some(batch.len())
    );
});
