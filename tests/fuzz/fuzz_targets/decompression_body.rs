//! The decompression body on arbitrary bytes, codings and frame splits.
//!
//! Input: byte 0 chooses what happens to the payload (bits 0-1: encode with nothing, gzip,
//! deflate, or gzip then deflate; bit 2: send a raw `Content-Encoding` taken from the payload's
//! first line instead; bit 3: flip a byte of the encoded stream; bit 4: sniffing off; bit 5:
//! empty frames between cuts), byte 1 the decoded-size limit (in 64-byte units, plus one),
//! byte 2 the frame size (0: one frame); the rest is the payload. Seeds are real deliveries.
//!
//! Invariants: never a panic; a valid stream within the limit (at every layer) decodes to
//! exactly its payload; the decoded output never passes the limit by more than one byte; the
//! heap stays within the limit plus a fixed margin.
#![no_main]

#[path = "common.rs"]
mod common;

use common::{Frames, HEAP, HEAP_MARGIN, collect_now, gzip, zlib};
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, HeaderValue};
use libfuzzer_sys::fuzz_target;
use polytomic_webhook_core::body::BodyErrorKind;
use polytomic_webhook_decompression::{Codings, DecompressionBody, DecompressionConfig};

fuzz_target!(|data: &[u8]| {
    let [flags, limit, frame_size, payload @ ..] = data else {
        return;
    };
    let mut headers = HeaderMap::new();
    let (mut body, declared): (Vec<u8>, &str) = match flags & 0b11 {
        0 => (payload.to_vec(), ""),
        1 => (gzip(payload), "gzip"),
        2 => (zlib(payload), "deflate"),
        _ => (zlib(&gzip(payload)), "gzip, deflate"),
    };
    let mut valid = !declared.is_empty();
    if flags & 0b100 != 0 {
        let line = payload.split(|b| *b == b'\n').next().unwrap_or_default();
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.insert(CONTENT_ENCODING, value);
        }
        valid = false;
    } else if valid {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(declared));
    }
    if flags & 0b1000 != 0 && !body.is_empty() {
        let at = usize::from(*frame_size) * 7 % body.len();
        body[at] ^= 0x5a;
        valid = false;
    }
    let Ok(codings) = Codings::from_headers(&headers) else {
        return;
    };
    let limit = u64::from(*limit) * 64 + 1;
    let mut config = DecompressionConfig::default();
    config.max_decompressed_bytes = limit;
    // Every coding `Codings` takes, stacked ones included, is decoded here.
    config.max_codings = polytomic_webhook_decompression::MAX_STACKED_CODINGS;
    config.sniff_gzip = flags & 0b1_0000 == 0;
    let frames = Frames::chunks(&body, usize::from(*frame_size), flags & 0b10_0000 != 0);

    let baseline = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let body = DecompressionBody::new(frames, &codings, config);
    let stats = body.stats().clone();
    let result = collect_now(body);
    let peak = HEAP.peak_usage().saturating_sub(baseline);

    assert!(
        stats.decoded_bytes() <= limit + 1,
        "decoded {} past {limit}",
        stats.decoded_bytes()
    );
    assert!(
        peak as u64 <= limit + HEAP_MARGIN as u64,
        "peak heap {peak} for limit {limit}"
    );
    match result {
        Ok(decoded) => {
            assert!(decoded.len() as u64 <= limit);
            if valid {
                assert_eq!(decoded, payload);
            }
        }
        Err(error) => {
            if valid {
                assert_eq!(
                    BodyErrorKind::of(&*error),
                    BodyErrorKind::LengthLimit,
                    "{error}"
                );
                // Stacked, what the outer layer produces (the gzip stream) answers to the
                // limit as well.
                let intermediate = if flags & 0b11 == 3 {
                    gzip(payload).len()
                } else {
                    0
                };
                assert!(payload.len().max(intermediate) as u64 > limit);
            }
        }
    }
});
