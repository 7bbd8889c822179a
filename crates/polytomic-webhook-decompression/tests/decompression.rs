//! Behaviour of the decompression layer, driven with `oneshot` and no network.

#![allow(clippy::unwrap_used)]
// Test code: a failed unwrap is a failed test.
// Every test needs gzip; those that need the other codecs say so.
#![cfg(feature = "gzip")]

mod support;

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use polytomic_webhook_core::PROBLEM_JSON;
use polytomic_webhook_core::body::{BodyErrorKind, BodyLimit};
use polytomic_webhook_core::response::ResponseBody;
use polytomic_webhook_decompression::{Coding, DecompressionLayer};
use support::{Frames, Seen, gzip, payload, recorder, unterminated_gzip_comment};
#[cfg(all(feature = "deflate", feature = "br", feature = "zstd"))]
use support::{brotli, zlib, zstd};
use tower::{Layer, ServiceExt};

struct Outcome {
    status: StatusCode,
    response: Response<ResponseBody<Full<Bytes>>>,
    body: Bytes,
    seen: Seen,
}

async fn send_with(
    layer: DecompressionLayer,
    content_encoding: Option<&str>,
    body: Frames,
) -> Outcome {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let service = layer.layer(recorder(seen.clone()));
    let mut request = Request::post("/webhooks").body(body).unwrap();
    if let Some(value) = content_encoding {
        request
            .headers_mut()
            .insert(CONTENT_ENCODING, value.parse().unwrap());
    }
    let mut response = service.oneshot(request).await.unwrap();
    let body = response.body_mut().collect().await.unwrap().to_bytes();
    let seen = seen.lock().unwrap().clone();
    Outcome {
        status: response.status(),
        response,
        body,
        seen,
    }
}

async fn send(content_encoding: Option<&str>, body: Vec<u8>) -> Outcome {
    send_with(
        DecompressionLayer::new(),
        content_encoding,
        Frames::new([body]),
    )
    .await
}

fn problem(outcome: &Outcome) -> serde_json::Value {
    assert_eq!(outcome.response.headers()[CONTENT_TYPE], PROBLEM_JSON);
    serde_json::from_slice(&outcome.body).unwrap()
}

#[tokio::test]
async fn gzip_with_content_encoding_is_decoded_and_headers_removed() {
    let data = payload(200);
    let outcome = send(Some("gzip"), gzip(&data)).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, data);
    assert_eq!(outcome.seen.content_encoding, None);
    assert_eq!(outcome.seen.content_length, None);
    let info = outcome.seen.info.unwrap();
    assert_eq!(info.coding(), "gzip");
    assert_eq!(info.stats().compressed_bytes(), gzip(&data).len() as u64);
    assert_eq!(info.stats().decoded_bytes(), data.len() as u64);
    assert!(!info.stats().was_sniffed());
}

#[tokio::test]
async fn gzip_without_content_encoding_is_sniffed() {
    let data = payload(50);
    let outcome = send(None, gzip(&data)).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, data);
    let info = outcome.seen.info.unwrap();
    assert!(info.stats().was_sniffed());
    assert_eq!(info.coding(), "gzip");
}

#[tokio::test]
async fn identity_declared_gzip_body_is_sniffed_too() {
    let data = payload(5);
    let outcome = send(Some("identity"), gzip(&data)).await;
    assert_eq!(outcome.body, data);
}

#[tokio::test]
async fn sniffing_can_be_switched_off() {
    let compressed = gzip(&payload(5));
    let outcome = send_with(
        DecompressionLayer::new().sniff_gzip(false),
        None,
        Frames::new([compressed.clone()]),
    )
    .await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, compressed);
}

#[tokio::test]
async fn sniffing_waits_for_three_bytes_across_tiny_frames() {
    let data = payload(20);
    let compressed = gzip(&data);
    let frames = Frames::new([
        compressed[..1].to_vec(),
        Vec::new(),
        compressed[1..2].to_vec(),
        compressed[2..].to_vec(),
    ]);
    let outcome = send_with(DecompressionLayer::new(), None, frames).await;
    assert_eq!(outcome.body, data);

    // Bodies shorter than the magic, and bodies that only start like it, pass unchanged.
    for short in [
        vec![],
        vec![0x1f],
        vec![0x1f, 0x8b],
        vec![0x1f, 0x8b, 0x09, 1, 2],
    ] {
        let outcome = send(None, short.clone()).await;
        assert_eq!(outcome.status, StatusCode::OK);
        assert_eq!(outcome.body, short);
    }
}

#[tokio::test]
async fn header_matching_ignores_case_whitespace_and_accepts_x_gzip() {
    let data = payload(10);
    for value in [
        "GZIP",
        "x-gzip",
        " gzip ",
        "X-GZip",
        "gzip,",
        "identity, gzip",
    ] {
        let outcome = send(Some(value), gzip(&data)).await;
        assert_eq!(outcome.status, StatusCode::OK, "{value:?}");
        assert_eq!(outcome.body, data, "{value:?}");
    }
}

#[cfg(all(feature = "deflate", feature = "br", feature = "zstd"))]
#[tokio::test]
async fn deflate_br_and_zstd_round_trip() {
    let data = payload(300);
    for (value, encoded) in [
        ("deflate", zlib(&data)),
        ("br", brotli(&data)),
        ("zstd", zstd(&data)),
    ] {
        let outcome = send(Some(value), encoded).await;
        assert_eq!(outcome.status, StatusCode::OK, "{value}");
        assert_eq!(outcome.body, data, "{value}");
        assert_eq!(outcome.seen.info.unwrap().coding(), value);
    }
}

#[cfg(all(feature = "deflate", feature = "br", feature = "zstd"))]
#[tokio::test]
async fn stacked_codings_are_undone_in_reverse_order() {
    let data = payload(500);
    // `gzip, br`: gzip was applied first, then br.
    let outcome = send_with(
        DecompressionLayer::new().max_codings(2),
        Some("gzip, br"),
        Frames::new([brotli(&gzip(&data))]),
    )
    .await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, data);

    let three = zstd(&zlib(&gzip(&data)));
    let outcome = send_with(
        DecompressionLayer::new().max_codings(3),
        Some("gzip, deflate, zstd"),
        Frames::split(&three, 7),
    )
    .await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, data);
}

#[tokio::test]
async fn multi_member_gzip_decodes_completely() {
    let first = payload(30);
    let second = b"and a second member".to_vec();
    let mut body = gzip(&first);
    body.extend(gzip(&second));
    let outcome = send(Some("gzip"), body.clone()).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, [first.clone(), second.clone()].concat());

    // The member boundary falling inside one-byte frames changes nothing.
    let outcome = send_with(DecompressionLayer::new(), None, Frames::split(&body, 1)).await;
    assert_eq!(outcome.body, [first, second].concat());
}

#[cfg(all(feature = "deflate", feature = "br", feature = "zstd"))]
#[tokio::test]
async fn every_frame_split_decodes_the_same() {
    let data = payload(100);
    let encoded = [
        ("gzip", gzip(&data)),
        ("deflate", zlib(&data)),
        ("br", brotli(&data)),
        ("zstd", zstd(&data)),
    ];
    for (value, encoded) in encoded {
        for size in [1, 2, 3, 17, 4096] {
            let outcome = send_with(
                DecompressionLayer::new(),
                Some(value),
                Frames::split(&encoded, size),
            )
            .await;
            assert_eq!(
                outcome.status,
                StatusCode::OK,
                "{value} in {size}-byte frames"
            );
            assert_eq!(outcome.body, data, "{value} in {size}-byte frames");
        }
    }
}

#[tokio::test]
async fn unsupported_codings_get_415_with_accept_encoding() {
    for value in ["compress", "gzip, gzip, gzip, gzip", "br;q=1"] {
        let outcome = send(Some(value), b"{}".to_vec()).await;
        assert_eq!(
            outcome.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{value}"
        );
        assert_eq!(outcome.seen.calls, 0, "inner service called for {value}");
        let accept = outcome.response.headers()[ACCEPT_ENCODING]
            .to_str()
            .unwrap();
        for coding in Coding::ALL {
            assert_eq!(
                accept.contains(coding.as_str()),
                coding.is_enabled(),
                "{accept} vs {coding}"
            );
        }
        let problem = problem(&outcome);
        assert_eq!(problem["code"], "unsupported_content_encoding");
        assert_eq!(problem["status"], 415);
    }
}

#[tokio::test]
async fn stacked_codings_are_refused_by_default_before_the_body_is_read() {
    let data = payload(10);
    let twice = gzip(&gzip(&data));
    let body = Frames::new([twice.clone()]);
    let polled = body.polled.clone();
    let outcome = send_with(DecompressionLayer::new(), Some("gzip, gzip"), body).await;
    assert_eq!(outcome.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(outcome.seen.calls, 0);
    assert_eq!(*polled.lock().unwrap(), 0, "the body was read");
    let refusal = problem(&outcome);
    assert_eq!(refusal["code"], "unsupported_content_encoding");
    let detail = refusal["detail"].as_str().unwrap();
    assert!(detail.contains("`max_codings`, up to 3"), "{detail}");

    // Enabled, the same request decodes.
    let stacked = DecompressionLayer::new().max_codings(2);
    let outcome = send_with(stacked, Some("gzip, gzip"), Frames::new([twice])).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, data);

    // One coding more than enabled is refused, naming the setting.
    let thrice = gzip(&gzip(&gzip(&data)));
    let outcome = send_with(stacked, Some("gzip, gzip, gzip"), Frames::new([thrice])).await;
    assert_eq!(outcome.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let detail = problem(&outcome)["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("more than 2 stacked"), "{detail}");
    assert!(detail.contains("`max_codings`"), "{detail}");

    // Past the hard maximum no setting helps, and the answer is the one it always was.
    let outcome = send_with(
        DecompressionLayer::new().max_codings(3),
        Some("gzip, gzip, gzip, gzip"),
        Frames::new([b"{}".to_vec()]),
    )
    .await;
    assert_eq!(
        problem(&outcome)["detail"],
        "more than 3 stacked content codings are not supported"
    );
}

/// `gzip, gzip` whose inner member is all header: the outer stage inflates 4 MiB that the inner
/// one swallows as a comment, so the final output stays empty while the work is real.
#[tokio::test]
async fn intermediate_output_counts_against_the_decompressed_limit_and_the_ratio() {
    let body = gzip(&unterminated_gzip_comment(4 << 20));
    let stacked = DecompressionLayer::new().max_codings(2);
    let send_body = |layer: DecompressionLayer| {
        send_with(layer, Some("gzip, gzip"), Frames::new([body.clone()]))
    };

    let outcome = send_body(stacked).await;
    assert_eq!(outcome.status, StatusCode::PAYLOAD_TOO_LARGE);
    let stats = outcome.seen.stats.unwrap();
    assert_eq!(stats.exceeded_limit(), Some((BodyLimit::Ratio, 100)));
    assert_eq!(stats.decoded_bytes(), 0);

    let limit = 1 << 20;
    let outcome = send_body(stacked.max_ratio(None).max_decompressed_bytes(limit)).await;
    assert_eq!(outcome.status, StatusCode::PAYLOAD_TOO_LARGE);
    let stats = outcome.seen.stats.unwrap();
    assert_eq!(
        stats.exceeded_limit(),
        Some((BodyLimit::Decompressed, limit))
    );

    // With room for all of it, the comment runs to the end of the body: corrupt, not too large.
    let outcome = send_body(stacked.max_ratio(None)).await;
    assert_eq!(outcome.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        outcome.seen.error.unwrap().0,
        BodyErrorKind::InvalidCompressedBody
    );
}

#[derive(Default)]
struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Three stacked gzip layers around an unterminated header comment: 64 MiB of work for the
/// middle stage and no output at all. The body hands its thread back (and asks to be polled
/// again) between bounded slices of that work instead of doing it in one poll.
#[test]
fn a_long_decode_without_output_yields_to_the_runtime() {
    let bomb = gzip(&gzip(&unterminated_gzip_comment(64 << 20)));
    let request = Request::post("/")
        .header(CONTENT_ENCODING, "gzip, gzip, gzip")
        .body(Full::new(Bytes::from(bomb)))
        .unwrap();
    let layer = DecompressionLayer::new()
        .max_codings(3)
        .max_ratio(None)
        .max_decompressed_bytes(u64::MAX);
    let mut body = pin!(layer.decompress(request).unwrap().into_body());
    let wakes = Arc::new(WakeCount::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    let mut pending = 0;
    let end = loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Pending => pending += 1,
            Poll::Ready(end) => break end,
        }
    };
    assert!(pending >= 16, "{pending} slices for 64 MiB of work");
    assert_eq!(wakes.0.load(Ordering::SeqCst), pending);
    let error = end.unwrap().unwrap_err();
    assert_eq!(
        BodyErrorKind::of(&*error),
        BodyErrorKind::InvalidCompressedBody
    );
}

/// The inner body is polled between slices of a long frame, so an error it raises on its own
/// (the composed layer's body deadline is one) ends the body after a slice, not after the frame.
#[tokio::test]
async fn an_inner_body_error_surfaces_while_a_long_frame_decodes() {
    let zeros = vec![0_u8; 64 << 20];
    let body = Frames::new([gzip(&zeros)]).failing_with("deadline passed");
    let layer = DecompressionLayer::new()
        .max_ratio(None)
        .max_decompressed_bytes(u64::MAX);
    let outcome = send_with(layer, Some("gzip"), body).await;
    let (_, message) = outcome.seen.error.unwrap();
    assert_eq!(message, "deadline passed");
    let decoded: usize = outcome.seen.frames.iter().map(Bytes::len).sum();
    assert!(decoded <= 4 << 20, "{decoded} bytes decoded first");
}

#[tokio::test]
async fn content_length_above_the_limit_is_refused_before_the_inner_service() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let service = DecompressionLayer::new()
        .max_compressed_bytes(1000)
        .layer(recorder(seen.clone()));
    let body = Frames::new([vec![b'x'; 10]]);
    let polled = body.polled.clone();
    let request = Request::post("/")
        .header(CONTENT_LENGTH, "1001")
        .header(CONTENT_ENCODING, "gzip")
        .body(body)
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(seen.lock().unwrap().calls, 0);
    assert_eq!(*polled.lock().unwrap(), 0, "the body must not be read");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "body_too_large");
    assert_eq!(problem["limit"], "compressed");
}

#[tokio::test]
async fn compressed_limit_is_counted_while_streaming_without_content_length() {
    let data = payload(200);
    let encoded = gzip(&data);
    let limit = encoded.len() as u64 - 1;
    let outcome = send_with(
        DecompressionLayer::new().max_compressed_bytes(limit),
        Some("gzip"),
        Frames::split(&encoded, 100),
    )
    .await;
    assert_eq!(outcome.status, StatusCode::PAYLOAD_TOO_LARGE);
    let stats = outcome.seen.stats.unwrap();
    assert_eq!(stats.exceeded_limit(), Some((BodyLimit::Compressed, limit)));

    let outcome = send_with(
        DecompressionLayer::new().max_compressed_bytes(limit + 1),
        Some("gzip"),
        Frames::split(&encoded, 100),
    )
    .await;
    assert_eq!(outcome.status, StatusCode::OK);
}

#[cfg(all(feature = "deflate", feature = "br", feature = "zstd"))]
#[tokio::test]
async fn decompressed_limit_is_exact() {
    let data = payload(400);
    let exact = data.len() as u64;
    for (coding, encoded) in [
        ("gzip", gzip(&data)),
        ("br", brotli(&data)),
        ("identity", data.clone()),
    ] {
        let at_limit = send_with(
            DecompressionLayer::new()
                .max_decompressed_bytes(exact)
                .max_ratio(None),
            Some(coding),
            Frames::new([encoded.clone()]),
        )
        .await;
        assert_eq!(at_limit.status, StatusCode::OK, "{coding}");
        assert_eq!(at_limit.body, data, "{coding}");

        let over = send_with(
            DecompressionLayer::new()
                .max_decompressed_bytes(exact - 1)
                .max_ratio(None),
            Some(coding),
            Frames::new([encoded]),
        )
        .await;
        assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE, "{coding}");
        assert_eq!(over.seen.error.unwrap().0, BodyErrorKind::LengthLimit);
        let stats = over.seen.stats.unwrap();
        assert_eq!(
            stats.exceeded_limit(),
            Some((BodyLimit::Decompressed, exact - 1))
        );
        // Never more than one byte past the limit is produced.
        assert!(
            stats.decoded_bytes() <= exact,
            "{coding}: {}",
            stats.decoded_bytes()
        );
    }
}

#[tokio::test]
async fn ratio_limit_fires_after_the_first_mebibyte() {
    let zeros = vec![0_u8; 4 * 1024 * 1024];
    let encoded = gzip(&zeros);
    assert!(
        encoded.len() * 100 < zeros.len(),
        "zeros compress better than 100:1"
    );
    let outcome = send(Some("gzip"), encoded.clone()).await;
    assert_eq!(outcome.status, StatusCode::PAYLOAD_TOO_LARGE);
    let stats = outcome.seen.stats.unwrap();
    assert_eq!(stats.exceeded_limit(), Some((BodyLimit::Ratio, 100)));
    assert!(stats.decoded_bytes() < 2 * 1024 * 1024);

    // Disabled, the same body passes; and a small, very compressible body is never refused.
    let outcome = send_with(
        DecompressionLayer::new().max_ratio(None),
        Some("gzip"),
        Frames::new([encoded]),
    )
    .await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body.len(), zeros.len());
    let small = vec![b'a'; 512 * 1024];
    assert_eq!(
        send(Some("gzip"), gzip(&small)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn limit_errors_stop_reading_input() {
    let zeros = vec![0_u8; 8 * 1024 * 1024];
    let encoded = gzip(&zeros);
    let body = Frames::split(&encoded, 64);
    let polled = body.polled.clone();
    let total_frames = encoded.len().div_ceil(64);
    let outcome = send_with(
        DecompressionLayer::new()
            .max_decompressed_bytes(1024)
            .max_ratio(None),
        Some("gzip"),
        body,
    )
    .await;
    assert_eq!(outcome.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(*polled.lock().unwrap() < total_frames / 10);
}

#[tokio::test]
async fn truncated_and_corrupt_gzip_are_body_errors() {
    let data = payload(100);
    let encoded = gzip(&data);
    // Every truncation point, including inside the header and the CRC footer.
    for cut in (1..encoded.len())
        .step_by(7)
        .chain(encoded.len() - 8..encoded.len())
    {
        let outcome = send(Some("gzip"), encoded[..cut].to_vec()).await;
        assert_eq!(outcome.status, StatusCode::BAD_REQUEST, "cut at {cut}");
        let (kind, message) = outcome.seen.error.unwrap();
        assert_eq!(kind, BodyErrorKind::InvalidCompressedBody, "cut at {cut}");
        assert!(message.contains("gzip"), "{message}");
    }

    let mut corrupt = encoded.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let outcome = send(Some("gzip"), corrupt).await;
    assert_eq!(outcome.status, StatusCode::BAD_REQUEST);

    let mut bad_crc = encoded.clone();
    let crc = bad_crc.len() - 8;
    bad_crc[crc] ^= 1;
    let outcome = send(Some("gzip"), bad_crc).await;
    assert_eq!(outcome.status, StatusCode::BAD_REQUEST);

    let outcome = send(Some("gzip"), b"{\"not\":\"gzip\"}".to_vec()).await;
    assert_eq!(outcome.status, StatusCode::BAD_REQUEST);

    let mut trailing = encoded;
    trailing.extend_from_slice(b"garbage");
    let outcome = send(Some("gzip"), trailing).await;
    assert_eq!(outcome.status, StatusCode::BAD_REQUEST);
}

#[cfg(all(feature = "deflate", feature = "br", feature = "zstd"))]
#[tokio::test]
async fn truncated_deflate_br_and_zstd_are_body_errors() {
    let data = payload(100);
    for (value, encoded) in [
        ("deflate", zlib(&data)),
        ("br", brotli(&data)),
        ("zstd", zstd(&data)),
    ] {
        let cut = encoded.len() - 3;
        let outcome = send(Some(value), encoded[..cut].to_vec()).await;
        assert_eq!(outcome.status, StatusCode::BAD_REQUEST, "{value}");
        assert_eq!(
            outcome.seen.error.unwrap().0,
            BodyErrorKind::InvalidCompressedBody,
            "{value}"
        );
    }
}

#[tokio::test]
async fn identity_passes_through_byte_for_byte_and_frame_for_frame() {
    let frames: Vec<Vec<u8>> = vec![
        b"{\"event\"".to_vec(),
        (0..=255).collect(),
        b"\x1f\x8b\x08 not at the start".to_vec(),
    ];
    let outcome = send_with(DecompressionLayer::new(), None, Frames::new(frames.clone())).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, frames.concat());
    let seen: Vec<Vec<u8>> = outcome.seen.frames.iter().map(|f| f.to_vec()).collect();
    assert_eq!(seen, frames);
    assert_eq!(outcome.seen.info.unwrap().coding(), "identity");
}

#[tokio::test]
async fn inner_body_errors_pass_through() {
    let body = Frames::new([gzip(b"partial")[..5].to_vec()]).failing_with("connection reset");
    let outcome = send_with(DecompressionLayer::new(), Some("gzip"), body).await;
    let (kind, message) = outcome.seen.error.unwrap();
    assert_eq!(kind, BodyErrorKind::Other);
    assert_eq!(message, "connection reset");
}

#[tokio::test]
async fn axum_extractors_answer_413_for_our_limits_and_400_for_corrupt_data() {
    use axum::{Router, routing::post};

    let app = Router::new()
        .route(
            "/",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(DecompressionLayer::new().max_decompressed_bytes(1000));
    let send = |body: Vec<u8>| {
        let app = app.clone();
        async move {
            let request = Request::post("/")
                .header(CONTENT_ENCODING, "gzip")
                .body(axum::body::Body::from(body))
                .unwrap();
            app.oneshot(request).await.unwrap().status()
        }
    };
    assert_eq!(send(gzip(&[b'a'; 1000])).await, StatusCode::OK);
    assert_eq!(
        send(gzip(&[b'a'; 1001])).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        send(gzip(&[b'a'; 1000])[..20].to_vec()).await,
        StatusCode::BAD_REQUEST
    );
}

/// Bodies far larger than one output buffer, so every codec fills its output window
/// mid-stream and must hand over what it still holds before asking for more input.
#[cfg(all(feature = "deflate", feature = "br", feature = "zstd"))]
#[tokio::test]
async fn large_bodies_fill_the_output_window_of_every_codec() {
    let data = payload(30_000);
    assert!(data.len() > 2 * 1024 * 1024);
    for (value, encoded) in [
        ("gzip", gzip(&data)),
        ("deflate", zlib(&data)),
        ("br", brotli(&data)),
        ("zstd", zstd(&data)),
        ("br, zstd", zstd(&brotli(&data))),
        ("zstd, gzip", gzip(&zstd(&data))),
    ] {
        for size in [7, 1000, usize::MAX] {
            let frames = Frames::split(&encoded, size.min(encoded.len()));
            let outcome = send_with(
                DecompressionLayer::new().max_ratio(None).max_codings(2),
                Some(value),
                frames,
            )
            .await;
            assert_eq!(
                outcome.status,
                StatusCode::OK,
                "{value} in {size}-byte frames"
            );
            assert!(
                outcome.body == data,
                "{value} in {size}-byte frames differs"
            );
        }
    }
}

/// Found by fuzzing: an identity frame larger than the room left must not count as decoded
/// more than one byte past the limit.
#[tokio::test]
async fn identity_counts_at_most_one_byte_past_the_limit() {
    let outcome = send_with(
        DecompressionLayer::new().max_decompressed_bytes(1),
        None,
        Frames::new([b"{}!".to_vec()]),
    )
    .await;
    assert_eq!(outcome.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(outcome.seen.stats.unwrap().decoded_bytes(), 2);
}

#[cfg(all(feature = "deflate", feature = "br", feature = "zstd"))]
#[tokio::test]
async fn a_failing_inner_coding_is_named() {
    // `deflate, br`: the br stream is valid, the deflate stream inside it is not.
    let outcome = send_with(
        DecompressionLayer::new().max_codings(2),
        Some("deflate, br"),
        Frames::new([brotli(b"this is not zlib data")]),
    )
    .await;
    assert_eq!(outcome.status, StatusCode::BAD_REQUEST);
    let (_, message) = outcome.seen.error.unwrap();
    assert!(message.contains("deflate"), "{message}");
}

/// A body built by hand with more codings than its configuration accepts fails at once, as
/// the layer does, instead of running the decoders the setting exists to rule out.
#[tokio::test]
async fn a_body_built_with_more_codings_than_configured_fails_unread() {
    use polytomic_webhook_decompression::{
        Codings, DecompressionBody, DecompressionConfig, UnsupportedContentEncoding,
    };

    let stacked = Codings::new(&[Coding::Gzip, Coding::Gzip]).unwrap();
    let twice = gzip(&gzip(b"{}"));
    let body = DecompressionBody::new(
        Full::new(Bytes::from(twice.clone())),
        &stacked,
        DecompressionConfig::default(),
    );
    let error = body.collect().await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<UnsupportedContentEncoding>(),
        Some(&UnsupportedContentEncoding::TooManyStacked { allowed: 1 })
    );
    let mut config = DecompressionConfig::default();
    config.max_codings = 2;
    let body = DecompressionBody::new(Full::new(Bytes::from(twice)), &stacked, config);
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"{}");
}
