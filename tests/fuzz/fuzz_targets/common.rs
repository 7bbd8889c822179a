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
