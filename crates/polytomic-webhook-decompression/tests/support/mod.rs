//! Shared test plumbing: encoders, a frame-by-frame body, and a recording inner service.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use polytomic_webhook_core::body::{BodyErrorKind, BodyStats};
use polytomic_webhook_decompression::{DecompressionBody, DecompressionInfo};
use tower::{BoxError, Service, service_fn};

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
    encoder.write_all(data).unwrap();
    drop(encoder);
    out
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A JSON-ish payload big enough to span many frames and decoder calls.
pub fn payload(records: usize) -> Vec<u8> {
    let mut out = String::from(r#"{"event":"sync.records","object":{"records":["#);
    for index in 0..records {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"hash":"{index:016x}","fields":{{"email":"user{index}@example.com","n":{}}}}}"#,
            index * 7919 % 1000
        ));
    }
    out.push_str("]}}");
    out.into_bytes()
}

/// A body that yields the given chunks one frame each, then optionally an error.
#[derive(Debug)]
pub struct Frames {
    chunks: VecDeque<Bytes>,
    error_at_end: Option<&'static str>,
    pub polled: Arc<Mutex<usize>>,
}

impl Frames {
    pub fn new(chunks: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Self {
            chunks: chunks.into_iter().map(Bytes::from).collect(),
            error_at_end: None,
            polled: Arc::default(),
        }
    }

    /// `data` cut into frames of `size` bytes (the last may be shorter).
    pub fn split(data: &[u8], size: usize) -> Self {
        Self::new(data.chunks(size).map(<[u8]>::to_vec))
    }

    pub fn failing_with(mut self, message: &'static str) -> Self {
        self.error_at_end = Some(message);
        self
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        *self.polled.lock().unwrap() += 1;
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.error_at_end.take().map(|message| Err(message.into())))
    }
}

/// What the inner service saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub calls: usize,
    pub content_encoding: Option<String>,
    pub content_length: Option<String>,
    pub info: Option<DecompressionInfo>,
    pub stats: Option<BodyStats>,
    pub frames: Vec<Bytes>,
    pub error: Option<(BodyErrorKind, String)>,
}

/// An inner service that reads the whole body frame by frame and records what it saw.
///
/// Answers 200 with the body, or 413/400/500 for limit/corrupt/other body errors.
pub fn recorder<B>(
    seen: Arc<Mutex<Seen>>,
) -> impl Service<
    Request<DecompressionBody<B>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    service_fn(move |request: Request<DecompressionBody<B>>| {
        let seen = seen.clone();
        async move {
            {
                let mut seen = seen.lock().unwrap();
                seen.calls += 1;
                let header = |name| {
                    request
                        .headers()
                        .get(name)
                        .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
                };
                seen.content_encoding = header(http::header::CONTENT_ENCODING);
                seen.content_length = header(http::header::CONTENT_LENGTH);
                seen.info = request.extensions().get::<DecompressionInfo>().cloned();
                seen.stats = request.extensions().get::<BodyStats>().cloned();
            }
            let mut body = std::pin::pin!(request.into_body());
            let mut collected = Vec::new();
            let status = loop {
                match body.frame().await {
                    None => break StatusCode::OK,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            collected.extend_from_slice(&data);
                            seen.lock().unwrap().frames.push(data);
                        }
                    }
                    Some(Err(error)) => {
                        let kind = BodyErrorKind::of(&*error);
                        seen.lock().unwrap().error = Some((kind, error.to_string()));
                        break match kind {
                            BodyErrorKind::LengthLimit => StatusCode::PAYLOAD_TOO_LARGE,
                            BodyErrorKind::InvalidCompressedBody => StatusCode::BAD_REQUEST,
                            _ => StatusCode::INTERNAL_SERVER_ERROR,
                        };
                    }
                }
            };
            let mut response = Response::new(Full::new(Bytes::from(collected)));
            *response.status_mut() = status;
            Ok(response)
        }
    })
}

/// A gzip member that is all header: its flags announce a comment (FLG.FCOMMENT) that runs for
/// `len` bytes of `a` and is never terminated, so a decoder reads all of it and produces nothing.
pub fn unterminated_gzip_comment(len: usize) -> Vec<u8> {
    const FCOMMENT: u8 = 0x10;
    let mut member = vec![0x1f, 0x8b, 0x08, FCOMMENT, 0, 0, 0, 0, 0, 0xff];
    member.resize(member.len() + len, b'a');
    member
}
