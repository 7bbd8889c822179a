//! The composed Events route (`PolytomicOrgEventsLayer` and the `PolytomicOrgEvent`
//! extractor), through `oneshot`, with arbitrary headers and body.
//!
//! Input: byte 0 chooses the headers (bits 0-1 `Polytomic-Signature`: hex over the bytes sent,
//! none, a wrong one, `sha256=` and base64 over the bytes before gzip; bit 2: gzip the body;
//! bits 3-4 `Content-Encoding`: none, gzip, identity, br; bit 5: a non-JSON `Content-Type`),
//! byte 1 the frame size (0: one frame); the rest is the body. Seeds are real events.
//!
//! Invariants: never a panic and never a 5xx; every answer but an accepted one carries a
//! problem code; nothing reaches the handler without a signature that matches the bytes sent
//! or the bytes before gzip; an accepted event is exactly what `parse_org_event` finds in the
//! decoded bytes; the heap stays within the limits plus a fixed margin.
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
use polytomic_webhook::auth::SignatureEncoding;
use polytomic_webhook::auth::signature::sign;
use polytomic_webhook::event::org::{PolytomicOrgEvent, RawPayload, parse_org_event};
use polytomic_webhook::prelude::*;
use polytomic_webhook::{EventBody, PolytomicOrgEvents};
use tower::{Layer, ServiceExt, service_fn};

const SECRET: &str = "fuzz-events-secret";
const LIMIT: u64 = 256 * 1024;

type Handler = tower::util::ServiceFn<
    fn(
        Request<EventBody>,
    )
        -> std::pin::Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>,
>;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    static ACCEPTED: RefCell<Option<PolytomicOrgEvent>> = const { RefCell::new(None) };
    static SERVICE: PolytomicOrgEvents<Handler> = {
        let mut config = PolytomicOrgEventsConfig::default()
            .secrets(SigningSecrets::new(SECRET).unwrap());
        config.decompression.max_decompressed_bytes = LIMIT;
        config.decompression.max_compressed_bytes = LIMIT;
        // The committed seeds are dated: without the window they still reach the handler.
        config = config.max_event_age(None).max_event_skew(None);
        PolytomicOrgEventsLayer::new(config)
            .unwrap()
            .layer(service_fn(handler as fn(_) -> _))
    };
}

/// What a handler taking `PolytomicOrgEvent` does: extract, or answer with the rejection.
fn handler(
    request: Request<EventBody>,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>> {
    Box::pin(async move {
        let request = request.map(axum_core::body::Body::new);
        Ok(
            match PolytomicOrgEvent::<RawPayload>::from_request(request, &()).await {
                Ok(event) => {
                    ACCEPTED.with(|slot| *slot.borrow_mut() = Some(event));
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
    let body = if flags & 0x04 != 0 {
        gzip(payload)
    } else {
        payload.to_vec()
    };
    let signed = matches!(flags & 0b11, 0 | 3);
    let mut request = Request::post("/webhooks/polytomic/events");
    request = match flags & 0b11 {
        0 => request.header(
            "polytomic-signature",
            SignatureEncoding::Hex.encode(&sign(SECRET, &body), false),
        ),
        1 => request,
        2 => request.header(
            "polytomic-signature",
            SignatureEncoding::Hex.encode(&sign("not-the-secret", &body), false),
        ),
        _ => request.header(
            "polytomic-signature",
            SignatureEncoding::Base64.encode(&sign(SECRET, payload), true),
        ),
    };
    let content_encoding = coding_from_bits(flags >> 3);
    if let Some(value) = content_encoding {
        request = request.header("content-encoding", value);
    }
    let content_type = if flags & 0x20 != 0 {
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
        RUNTIME.with(|runtime| answer_within(runtime, service.oneshot(request), 3 * LIMIT));
    let accepted = ACCEPTED.with(|slot| slot.borrow_mut().take());
    if status != StatusCode::OK {
        assert!(accepted.is_none());
        return;
    }
    let event = accepted.expect("a 200 from this handler means an extracted event");
    assert!(
        signed,
        "an event without a valid signature reached the handler"
    );
    // What an independent receiver makes of the same bytes: gunzip if they are gzip, parse.
    let plain = match content_encoding {
        Some("gzip") => gunzip(&body).expect("accepted gzip decodes independently"),
        // Gzip without `Content-Encoding` is recognised by its magic bytes, as for sync.records.
        _ => gunzip(&body).unwrap_or(body),
    };
    let independent =
        parse_org_event::<RawPayload>(&plain).expect("accepted bytes parse independently");
    assert_eq!(event.id(), independent.id());
    assert_eq!(event.kind(), independent.kind());
    assert_eq!(event.organization_id(), independent.organization_id());
    assert_eq!(event.created_at(), independent.created_at());
    assert_eq!(event.payload(), independent.payload());
});
