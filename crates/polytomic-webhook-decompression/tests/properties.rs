//! Property tests: the layer decodes exactly what a reference decoder does, however the
//! compressed stream is cut into frames, and its limits are exact.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
#![cfg(all(
    feature = "gzip",
    feature = "deflate",
    feature = "br",
    feature = "zstd"
))]

mod support;

use std::io::Read;
use std::sync::{Arc, Mutex};

use http::header::CONTENT_ENCODING;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use polytomic_webhook_core::body::BodyLimit;
use polytomic_webhook_decompression::DecompressionLayer;
use proptest::prelude::*;
use support::{Frames, Seen, brotli, gzip, recorder, zlib, zstd};
use tower::{Layer, ServiceExt};

/// What an independent decoder makes of `encoded` under `coding` (applied in order).
fn reference_decode(codings: &[&str], encoded: &[u8]) -> Vec<u8> {
    let mut data = encoded.to_vec();
    for coding in codings.iter().rev() {
        let mut out = Vec::new();
        match *coding {
            "gzip" => {
                flate2::read::MultiGzDecoder::new(&data[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "deflate" => {
                flate2::read::ZlibDecoder::new(&data[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "br" => {
                brotli::Decompressor::new(&data[..], 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "zstd" => out = zstd::decode_all(&data[..]).unwrap(),
            other => panic!("unknown coding {other}"),
        }
        data = out;
    }
    data
}

fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => gzip(data),
        "deflate" => zlib(data),
        "br" => brotli(data),
        "zstd" => zstd(data),
        other => panic!("unknown coding {other}"),
    }
}

/// Cuts `data` at the given points (as fractions), adding empty frames between some cuts.
fn frames_at(data: &[u8], cuts: &[(u16, bool)]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|(cut, _)| usize::from(*cut) * data.len() / usize::from(u16::MAX))
        .collect();
    points.sort_unstable();
    let mut frames = Vec::new();
    let mut start = 0;
    for (point, (_, empty_after)) in points.into_iter().zip(cuts) {
        frames.push(data[start..point].to_vec());
        if *empty_after {
            frames.push(Vec::new());
        }
        start = point;
    }
    frames.push(data[start..].to_vec());
    frames
}

async fn decode_through_layer(
    layer: DecompressionLayer,
    content_encoding: Option<String>,
    frames: Vec<Vec<u8>>,
) -> (StatusCode, Vec<u8>, Seen) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let service = layer.layer(recorder(seen.clone()));
    let mut request = Request::post("/").body(Frames::new(frames)).unwrap();
    if let Some(value) = content_encoding {
        request
            .headers_mut()
            .insert(CONTENT_ENCODING, value.parse().unwrap());
    }
    let response = service.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen = seen.lock().unwrap().clone();
    (status, body.to_vec(), seen)
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// Payloads that compress in interesting ways: random bytes, long runs, and text.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        (any::<u8>(), 0..200_000_usize).prop_map(|(byte, len)| vec![byte; len]),
        "[a-z\\{\\}\":, ]{0,3000}".prop_map(String::into_bytes),
    ]
}

fn coding() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["gzip", "deflate", "br", "zstd"])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decoding_matches_a_reference_decoder_for_any_framing(
        data in payload(),
        codings in prop::collection::vec(coding(), 1..=3),
        cuts in prop::collection::vec((any::<u16>(), any::<bool>()), 0..24),
        one_byte_frames in any::<bool>(),
    ) {
        let mut encoded = data.clone();
        for coding in &codings {
            encoded = encode(coding, &encoded);
        }
        prop_assert_eq!(reference_decode(&codings, &encoded), data.clone());
        let frames = if one_byte_frames && encoded.len() < 20_000 {
            encoded.chunks(1).map(<[u8]>::to_vec).collect()
        } else {
            frames_at(&encoded, &cuts)
        };
        let (status, body, _) = block_on(decode_through_layer(
            DecompressionLayer::new().max_ratio(None).max_codings(3),
            Some(codings.join(", ")),
            frames,
        ));
        prop_assert_eq!(status, StatusCode::OK);
        prop_assert_eq!(body, data);
    }

    #[test]
    fn sniffed_gzip_matches_the_reference_for_any_framing(
        data in payload(),
        cuts in prop::collection::vec((any::<u16>(), any::<bool>()), 0..8),
    ) {
        let encoded = gzip(&data);
        let (status, body, seen) = block_on(decode_through_layer(
            DecompressionLayer::new().max_ratio(None),
            None,
            frames_at(&encoded, &cuts),
        ));
        prop_assert_eq!(status, StatusCode::OK);
        prop_assert_eq!(body, data);
        prop_assert!(seen.stats.unwrap().was_sniffed());
    }

    #[test]
    fn the_decompressed_limit_is_exact(
        data in prop::collection::vec(any::<u8>(), 1..50_000),
        coding in prop::sample::select(vec!["gzip", "deflate", "br", "zstd", "identity"]),
        cuts in prop::collection::vec((any::<u16>(), any::<bool>()), 0..8),
    ) {
        let encoded = if coding == "identity" { data.clone() } else { encode(coding, &data) };
        let exact = data.len() as u64;
        let layer = |limit| DecompressionLayer::new()
            .max_decompressed_bytes(limit)
            .max_ratio(None)
            .sniff_gzip(false);
        let (status, body, _) = block_on(decode_through_layer(
            layer(exact),
            Some(coding.to_owned()),
            frames_at(&encoded, &cuts),
        ));
        prop_assert_eq!(status, StatusCode::OK);
        prop_assert_eq!(body, data);

        let (status, _, seen) = block_on(decode_through_layer(
            layer(exact - 1),
            Some(coding.to_owned()),
            frames_at(&encoded, &cuts),
        ));
        prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let stats = seen.stats.unwrap();
        prop_assert_eq!(stats.exceeded(), Some(BodyLimit::Decompressed));
        prop_assert!(stats.decoded_bytes() <= exact);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_fail_cleanly(
        data in prop::collection::vec(any::<u8>(), 0..2048),
        coding in prop::sample::select(vec!["gzip", "deflate", "br", "zstd", "gzip, br", "zstd, gzip"]),
        cuts in prop::collection::vec((any::<u16>(), any::<bool>()), 0..8),
    ) {
        let (status, _, seen) = block_on(decode_through_layer(
            DecompressionLayer::new().max_codings(2),
            Some(coding.to_owned()),
            frames_at(&data, &cuts),
        ));
        // Random bytes are almost never a valid stream; whatever they are, the answer is one
        // of the documented ones and never a panic or a 500.
        prop_assert!(
            [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE]
                .contains(&status),
            "{status} for {coding}: {:?}", seen.error
        );
    }
}
