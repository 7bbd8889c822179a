//! A small body that asks for a great deal of decoding, over TCP on a two-thread runtime:
//! `Content-Encoding: gzip, gzip, gzip` around a gzip member whose header comment never ends.
//! The middle layer inflates a gigabyte that the innermost one swallows as header, so no limit
//! on the final output ever sees it.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use http::header::CONTENT_ENCODING;
use http::{StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use polytomic_webhook::PolytomicWebhookConfig;
use polytomic_webhook::testing::Delivery;
use support::*;

/// The servers here share two cores with the client; the timings asserted below need them to
/// themselves, so the tests of this file take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How much comment the middle layer inflates: the old decoder spent seconds on it.
const COMMENT_MIB: u32 = 1024;

/// The bound the issue sets for answering the bomb, and for the ordinary request next to it.
const BOMB_ANSWERED_WITHIN: Duration = Duration::from_secs(2);
const ORDINARY_ANSWERED_WITHIN: Duration = Duration::from_millis(100);

/// Deflates `input` completely, ending with `flush`.
fn deflate(compress: &mut Compress, input: &[u8], flush: FlushCompress) -> Vec<u8> {
    let start = compress.total_in();
    let mut output = Vec::with_capacity(input.len() / 512 + 64);
    loop {
        let consumed = usize::try_from(compress.total_in() - start).unwrap();
        let status = compress
            .compress_vec(&input[consumed..], &mut output, flush)
            .unwrap();
        let all_in = compress.total_in() - start == input.len() as u64;
        // Output stops short of the buffer's end only once everything is flushed.
        if status == Status::StreamEnd || (all_in && output.len() < output.capacity()) {
            return output;
        }
        output.reserve(output.capacity());
    }
}

/// `gzip, gzip, gzip`: the innermost member is only a header whose comment (FLG.FCOMMENT)
/// runs for [`COMMENT_MIB`] MiB of `a` and never ends; the middle member is a valid gzip of
/// that; the outer one a gzip of the middle.
fn comment_bomb() -> Vec<u8> {
    const FCOMMENT: u8 = 0x10;
    let header = [0x1f, 0x8b, 0x08, FCOMMENT, 0, 0, 0, 0, 0, 0xff];
    let run = vec![b'a'; 1 << 20];
    // Deflating a gigabyte would take longer than the decoding it provokes. A full flush makes
    // what follows refer to nothing before it, so one compressed MiB can be repeated as is.
    let mut compress = Compress::new(Compression::best(), false);
    let mut middle = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
    middle.extend(deflate(&mut compress, &header, FlushCompress::Full));
    let segment = deflate(&mut compress, &run, FlushCompress::Full);
    let mut crc = Crc::new();
    crc.update(&header);
    let mut run_crc = Crc::new();
    run_crc.update(&run);
    for _ in 0..COMMENT_MIB {
        middle.extend_from_slice(&segment);
        crc.combine(&run_crc);
    }
    middle.extend(deflate(&mut compress, &[], FlushCompress::Finish));
    middle.extend_from_slice(&crc.sum().to_le_bytes());
    middle.extend_from_slice(&crc.amount().to_le_bytes());
    gzip(&middle)
}

/// The receiver example's server with `decompression` settings read as a file would give them.
async fn start(decompression: serde_json::Value, body_timeout_secs: f64) -> Server {
    let config: PolytomicWebhookConfig = serde_json::from_value(serde_json::json!({
        "secrets": SECRET,
        "body_timeout_secs": body_timeout_secs,
        "decompression": decompression,
    }))
    .unwrap();
    start_axum(config).await
}

/// Sends the bomb in `body` on a connection of its own, timing the answer.
fn send_bomb(server: &Server, body: ClientBody) -> tokio::task::JoinHandle<(Reply, Duration)> {
    let request = request(server.addr, Version::HTTP_11, body, |headers| {
        headers.insert(CONTENT_ENCODING, "gzip, gzip, gzip".parse().unwrap());
    });
    let addr = server.addr;
    tokio::spawn(async move {
        let started = Instant::now();
        let reply = send(addr, request).await;
        (reply, started.elapsed())
    })
}

/// An ordinary delivery on a connection of its own, its answer timed.
async fn ordinary_delivery(server: &Server) -> Duration {
    let delivery = Delivery::new()
        .secret(SECRET)
        .record_json(serde_json::json!({"email": "ada@example.com"}));
    let request = encoded(server.addr, delivery.encode());
    let started = Instant::now();
    let reply = send(server.addr, request).await;
    let elapsed = started.elapsed();
    reply.assert_accepted(1);
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_gzip_around_an_endless_header_comment_is_refused_quickly() {
    let _serial = SERIAL.lock().await;
    let bomb = Bytes::from(comment_bomb());

    // By default one coding is the most a request may declare: refused from the headers.
    let server = start(serde_json::json!({}), 30.0).await;
    let (reply, elapsed) = send_bomb(&server, full(bomb.clone())).await.unwrap();
    reply.assert_problem(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_content_encoding",
    );
    assert!(
        reply.json()["detail"]
            .as_str()
            .unwrap()
            .contains("max_codings"),
        "{reply:?}"
    );
    assert!(elapsed < BOMB_ANSWERED_WITHIN, "answered after {elapsed:?}");

    // With stacking on, every layer's output counts against the limits: the ratio stops the
    // middle layer after its first MiB, while an ordinary delivery is served next to it.
    let server = start(serde_json::json!({ "max_codings": 3 }), 30.0).await;
    let bomb_reply = send_bomb(&server, full(bomb.clone()));
    let ordinary = ordinary_delivery(&server).await;
    let (reply, elapsed) = bomb_reply.await.unwrap();
    println!(
        "{} bytes, three layers: answered {} after {elapsed:?}; ordinary delivery beside it \
         answered after {ordinary:?}",
        bomb.len(),
        reply.status
    );
    reply.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(reply.json()["limit"], "ratio");
    assert!(elapsed < BOMB_ANSWERED_WITHIN, "answered after {elapsed:?}");
    assert!(
        ordinary < ORDINARY_ANSWERED_WITHIN,
        "the ordinary delivery took {ordinary:?}"
    );
    assert_eq!(server.received.take().len(), 1);
}

/// The bomb, then nothing more although the declared length says more follows: the server's
/// input never ends while it decodes.
struct ThenStall {
    data: Option<Bytes>,
    declared: u64,
}

impl Body for ThenStall {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.data.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.declared)
    }
}

/// With every size limit out of the way, only the body deadline can stop the bomb; it must
/// fire while the frame is still being decoded, not after the whole gigabyte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_deadline_fires_while_a_long_frame_decodes() {
    let _serial = SERIAL.lock().await;
    let bomb = Bytes::from(comment_bomb());
    let unlimited = serde_json::json!({
        "max_codings": 3,
        "max_ratio": null,
        "max_decompressed_bytes": u64::MAX,
    });
    let server = start(unlimited, 1.0).await;
    let body = ThenStall {
        declared: bomb.len() as u64 + 1,
        data: Some(bomb),
    };
    let bomb_reply = send_bomb(&server, body.boxed_unsync());
    // Well inside the deadline, with the bomb's frame being decoded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ordinary = ordinary_delivery(&server).await;
    let (reply, elapsed) = bomb_reply.await.unwrap();
    println!(
        "deadline 1 s: answered {} after {elapsed:?}; ordinary delivery answered after {ordinary:?}",
        reply.status
    );
    reply.assert_problem(StatusCode::REQUEST_TIMEOUT, "body_timeout");
    // The deadline plus the generous bound for answering at all.
    assert!(
        elapsed < Duration::from_secs(1) + BOMB_ANSWERED_WITHIN,
        "answered after {elapsed:?}"
    );
    assert!(
        ordinary < ORDINARY_ANSWERED_WITHIN,
        "the ordinary delivery took {ordinary:?}"
    );
}
