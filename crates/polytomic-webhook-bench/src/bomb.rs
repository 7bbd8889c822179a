//! The decompression bomb: 1 GiB of zeros, gzipped, sent to a receiver with a 32 MiB limit.
//!
//! Heap figures come from `peak_alloc`'s counters, which only count when the running binary
//! installs [`PeakAlloc`] as its global allocator (the `report` binary does).

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use peak_alloc::PeakAlloc;
use tower::ServiceExt;

use crate::pipelines::{BODY_LIMIT, SECRET, request};

const MIB: usize = 1024 * 1024;

/// `size` bytes of zeros through a level-6 gzip encoder, streamed: the zeros are never in
/// memory at once.
pub fn gzip_zeros(size: usize) -> Bytes {
    let zeros = vec![0_u8; MIB];
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut left = size;
    while left > 0 {
        let chunk = left.min(MIB);
        // Writing to a `Vec` cannot fail.
        let _ = encoder.write_all(&zeros[..chunk]);
        left -= chunk;
    }
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// One bomb delivery through one receiver.
#[derive(Clone, Copy, Debug)]
pub struct BombRun {
    /// The answer's status.
    pub status: StatusCode,
    /// From sending the request to having the full answer.
    pub elapsed: Duration,
    /// Peak heap above what was in use before the request, in bytes.
    pub peak_heap: usize,
}

/// A body that hands out its bytes in frames of a fixed size, as a socket would.
#[derive(Debug)]
pub struct Chunked {
    data: Bytes,
    frame: usize,
}

impl Chunked {
    /// `data` in frames of `frame` bytes (the last one shorter).
    pub fn new(data: Bytes, frame: usize) -> Self {
        Self {
            data,
            frame: frame.max(1),
        }
    }
}

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.data.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let frame = this.data.split_to(this.frame.min(this.data.len()));
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(frame))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.len() as u64)
    }
}

/// Sends `bomb` through `router` (which must check [`SECRET`]) and measures the answer: in one
/// frame, or in frames of `frame` bytes when given.
pub async fn send(router: &Router, bomb: &Bytes, frame: Option<usize>) -> BombRun {
    let mut request = request(bomb, SECRET);
    if let Some(frame) = frame {
        *request.body_mut() = axum::body::Body::new(Chunked::new(bomb.clone(), frame));
    }
    let measured = measure(async {
        match router.clone().oneshot(request).await {
            Ok(response) => response.status(),
            Err(never) => match never {},
        }
    })
    .await;
    BombRun {
        status: measured.output,
        elapsed: measured.elapsed,
        peak_heap: measured.peak_heap,
    }
}

/// What running a future produced and cost.
#[derive(Clone, Copy, Debug)]
pub struct Measured<T> {
    /// The future's output.
    pub output: T,
    /// From the first poll to the output.
    pub elapsed: Duration,
    /// Peak heap above what was in use before the first poll, in bytes.
    pub peak_heap: usize,
}

/// Runs `future` to completion and measures its time and peak heap. The peak counts every
/// thread's allocations, so nothing else should run meanwhile.
pub async fn measure<F: Future>(future: F) -> Measured<F::Output> {
    let heap = PeakAlloc;
    let before = heap.current_usage();
    heap.reset_peak_usage();
    let started = Instant::now();
    let output = future.await;
    let elapsed = started.elapsed();
    let peak_heap = heap.peak_usage().saturating_sub(before);
    Measured {
        output,
        elapsed,
        peak_heap,
    }
}

/// Time to inflate the first [`BODY_LIMIT`] bytes of `bomb` into a `Vec` sized for them up
/// front: the least a receiver that buffers up to the limit pays before it can refuse.
pub fn inflate_limit(bomb: &Bytes) -> (Duration, usize) {
    let started = Instant::now();
    let mut out = Vec::with_capacity(BODY_LIMIT);
    let read = flate2::read::GzDecoder::new(&bomb[..])
        .take(BODY_LIMIT as u64)
        .read_to_end(&mut out)
        .unwrap_or_default();
    (started.elapsed(), read)
}
