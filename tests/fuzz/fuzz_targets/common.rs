//! Pieces shared by the fuzz targets: a frame-by-frame body, encoders, and heap accounting.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame};
use peak_alloc::PeakAlloc;

#[global_allocator]
pub static HEAP: PeakAlloc = PeakAlloc;

/// Heap bytes a target may use beyond its configured body limit: decoder state (a brotli
/// window is at most 16 MiB, zstd's is capped at 8 MiB) and the harness's own buffers.
pub const HEAP_MARGIN: usize = 24 * 1024 * 1024;

/// A body that yields the given chunks, one frame each, always ready.
pub struct Frames(pub VecDeque<Bytes>);

impl Frames {
    /// `data` in frames of `size` bytes (0: one frame), with empty frames between if asked.
    pub fn chunks(data: &[u8], size: usize, empty_frames: bool) -> Self {
        let size = if size == 0 { data.len().max(1) } else { size };
        let mut frames = VecDeque::new();
        for chunk in data.chunks(size) {
            frames.push_back(Bytes::copy_from_slice(chunk));
            if empty_frames {
                frames.push_back(Bytes::new());
            }
        }
        Self(frames)
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// Reads a body whose inner frames are always ready, without a runtime.
pub fn collect_now<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Result<Vec<u8>, B::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            Poll::Ready(Some(Err(error))) => return Err(error),
            Poll::Ready(None) => return Ok(out),
            Poll::Pending => panic!("a body of ready frames returned Pending"),
        }
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// Decodes gzip (any number of members) the way an independent receiver would.
pub fn gunzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(data), &mut out).ok()?;
    Some(out)
}

/// The `Content-Encoding` two bits of a target's flags stand for: none, gzip, identity, br.
pub fn coding_from_bits(bits: u8) -> Option<&'static str> {
    match bits & 0b11 {
        0 => None,
        1 => Some("gzip"),
        2 => Some("identity"),
        _ => Some("br"),
    }
}

/// A rejection as the response a handler would send, its body read into memory.
pub async fn rejection_response(
    rejection: impl axum_core::response::IntoResponse,
) -> http::Response<http_body_util::Full<Bytes>> {
    use http_body_util::BodyExt as _;

    let (parts, body) = rejection.into_response().into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    http::Response::from_parts(parts, http_body_util::Full::new(bytes))
}

/// Runs `future` (a request through a composed service) on `runtime`, and checks what every
/// composed-service target requires: the heap grew by at most `heap_limit` plus the margin,
/// no answer is a 5xx, and every answer but a 200 carries a problem code. Returns the status.
pub fn answer_within<F, B, E>(
    runtime: &tokio::runtime::Runtime,
    future: F,
    heap_limit: u64,
) -> http::StatusCode
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: std::fmt::Debug,
{
    let baseline = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let response = runtime.block_on(future).unwrap();
    let peak = HEAP.peak_usage().saturating_sub(baseline);
    assert!(
        peak as u64 <= heap_limit + HEAP_MARGIN as u64,
        "peak heap {peak}"
    );
    let status = response.status();
    assert!(!status.is_server_error(), "{status}");
    if status != http::StatusCode::OK {
        assert!(
            response
                .extensions()
                .get::<polytomic_webhook::problem::ProblemCode>()
                .is_some(),
            "{status} without a code"
        );
    }
    status
}
