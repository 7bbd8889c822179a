//! The request body handed to the inner service: decoded, counted and bounded while it streams.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use polytomic_webhook_core::body::{
    BodyLimit, BodyStats, BoxError, InvalidCompressedBody, length_limit_error,
};

use crate::coding::{Coding, Codings};
use crate::config::{DecompressionConfig, RATIO_CHECK_AFTER_BYTES};
use crate::pipeline::Pipeline;

/// The three bytes every gzip stream starts with: ID1, ID2 and CM = 8 (deflate).
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// Decoded output is written straight into `Bytes` carved from buffers of this size (doubling
/// per buffer up to [`MAX_OUTPUT_BUFFER`]), so a large body is yielded in few, large frames.
const MIN_OUTPUT_BUFFER: usize = 32 * 1024;
const MAX_OUTPUT_BUFFER: usize = 1024 * 1024;

pin_project! {
    /// A request body that decodes its content coding as it streams, within the configured limits.
    ///
    /// Created by [`Decompression`](crate::Decompression). Its errors are boxed:
    /// - [`http_body_util::LengthLimitError`](https://docs.rs/http-body-util/latest/http_body_util/struct.LengthLimitError.html) when a limit fires (axum's extractors answer 413;
    ///   the request's [`BodyStats`] extension says which limit),
    /// - [`InvalidCompressedBody`] when the data cannot be decoded,
    /// - the inner body's own error otherwise.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use polytomic_webhook_decompression::{Codings, DecompressionBody, DecompressionConfig};
    ///
    /// # tokio_test();
    /// # fn tokio_test() {
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let body = DecompressionBody::new(
    ///     Full::new(Bytes::from_static(b"{\"event\":\"sync.records\"}")),
    ///     &Codings::default(),
    ///     DecompressionConfig::default(),
    /// );
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert_eq!(&bytes[..], b"{\"event\":\"sync.records\"}");
    /// # });
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct DecompressionBody<B> {
        #[pin]
        inner: B,
        state: State,
    }
}

#[derive(Debug)]
struct State {
    mode: Mode,
    config: DecompressionConfig,
    stats: BodyStats,
    received: u64,
    decoded: u64,
    /// Received bytes not yet decoded (or, while sniffing, not yet classified).
    pending: Bytes,
    input_ended: bool,
    trailers: Option<HeaderMap>,
    /// Initialised spare room that decoded bytes are written into and split off from.
    output: BytesMut,
    next_output_buffer: usize,
}

#[derive(Debug)]
enum Mode {
    /// No coding declared: waiting for three bytes to tell gzip from anything else.
    Sniffing,
    Identity,
    Decoding(Box<Pipeline>),
    /// Ended, cleanly or with an error already yielded; the inner body is not polled again.
    Finished,
}

impl<B> DecompressionBody<B> {
    /// Wraps `inner`, which the sender encoded with `codings`.
    ///
    /// With no codings, the body passes through unchanged (still bounded by the limits) unless
    /// `sniff_gzip` is on and it starts with the gzip magic bytes.
    pub fn new(inner: B, codings: &Codings, config: DecompressionConfig) -> Self {
        Self::with_stats(inner, codings, config, BodyStats::new())
    }

    pub(crate) fn with_stats(
        inner: B,
        codings: &Codings,
        config: DecompressionConfig,
        stats: BodyStats,
    ) -> Self {
        let mode = match Pipeline::new(codings) {
            Some(pipeline) if !codings.is_empty() => Mode::Decoding(Box::new(pipeline)),
            _ if config.sniff_gzip => Mode::Sniffing,
            _ => Mode::Identity,
        };
        Self {
            inner,
            state: State {
                mode,
                config,
                stats,
                received: 0,
                decoded: 0,
                pending: Bytes::new(),
                input_ended: false,
                trailers: None,
                output: BytesMut::new(),
                next_output_buffer: MIN_OUTPUT_BUFFER,
            },
        }
    }

    /// The counters of this body, shared with the request's [`BodyStats`] extension.
    pub fn stats(&self) -> &BodyStats {
        &self.state.stats
    }
}

/// What one turn of the state machine decided.
enum Step {
    Yield(Frame<Bytes>),
    Fail(BoxError),
    NeedInput,
    Continue,
    End,
}

impl<B> Body for DecompressionBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            match this.state.step() {
                Step::Yield(frame) => return Poll::Ready(Some(Ok(frame))),
                Step::Fail(error) => {
                    this.state.mode = Mode::Finished;
                    return Poll::Ready(Some(Err(error)));
                }
                Step::End => {
                    this.state.mode = Mode::Finished;
                    return Poll::Ready(this.state.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                Step::Continue => {}
                Step::NeedInput => match ready!(this.inner.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(mut data) => {
                            let data = data.copy_to_bytes(data.remaining());
                            if let Err(error) = this.state.receive(data) {
                                this.state.mode = Mode::Finished;
                                return Poll::Ready(Some(Err(error)));
                            }
                        }
                        Err(frame) => {
                            this.state.trailers = frame.into_trailers().ok();
                            this.state.input_ended = true;
                        }
                    },
                    Some(Err(error)) => {
                        this.state.mode = Mode::Finished;
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    None => this.state.input_ended = true,
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state.mode, Mode::Finished)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state.mode {
            // Passing through unchanged: the inner body's size, once the sniff is over.
            Mode::Identity if self.state.received == 0 => self.inner.size_hint(),
            Mode::Finished => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl State {
    /// Counts newly received bytes against the limits and queues them for decoding.
    fn receive(&mut self, data: Bytes) -> Result<(), BoxError> {
        if data.is_empty() {
            return Ok(());
        }
        self.received += data.len() as u64;
        self.stats.add_compressed(data.len() as u64);
        if self.received > self.config.max_compressed_bytes {
            return Err(self.exceeded(BodyLimit::Compressed, self.config.max_compressed_bytes));
        }
        self.pending = if self.pending.is_empty() {
            data
        } else {
            // Only while sniffing, when the first frames held fewer than three bytes.
            [&self.pending[..], &data[..]].concat().into()
        };
        Ok(())
    }

    fn step(&mut self) -> Step {
        match &mut self.mode {
            Mode::Finished => Step::End,
            Mode::Sniffing => {
                if self.pending.len() < GZIP_MAGIC.len() && !self.input_ended {
                    return Step::NeedInput;
                }
                let gzip = Some(&self.pending)
                    .filter(|pending| pending.starts_with(&GZIP_MAGIC))
                    .and_then(|_| Pipeline::new(&Codings::from(Coding::Gzip)));
                self.mode = match gzip {
                    Some(pipeline) => {
                        self.stats.set_sniffed();
                        Mode::Decoding(Box::new(pipeline))
                    }
                    None => Mode::Identity,
                };
                Step::Continue
            }
            Mode::Identity => {
                if self.pending.is_empty() {
                    return if self.input_ended {
                        Step::End
                    } else {
                        Step::NeedInput
                    };
                }
                let data = std::mem::take(&mut self.pending);
                let allowed = self
                    .config
                    .max_decompressed_bytes
                    .saturating_sub(self.decoded);
                if data.len() as u64 > allowed {
                    // Counted like decoded output: at most one byte past the limit.
                    self.stats.add_decoded(allowed + 1);
                    return Step::Fail(
                        self.exceeded(BodyLimit::Decompressed, self.config.max_decompressed_bytes),
                    );
                }
                self.decoded += data.len() as u64;
                self.stats.add_decoded(data.len() as u64);
                Step::Yield(Frame::data(data))
            }
            Mode::Decoding(pipeline) => {
                if self.pending.is_empty() && !self.input_ended && !pipeline.may_have_output() {
                    return Step::NeedInput;
                }
                if self.pending.is_empty() && self.input_ended && pipeline.is_done() {
                    return Step::End;
                }
                self.decode()
            }
        }
    }

    /// Runs the decoders over the pending input into the output buffer.
    fn decode(&mut self) -> Step {
        let Mode::Decoding(pipeline) = &mut self.mode else {
            return Step::Continue;
        };
        if self.output.len() < MIN_OUTPUT_BUFFER / 4 {
            self.output = BytesMut::zeroed(self.next_output_buffer);
            self.next_output_buffer = (self.next_output_buffer * 2).min(MAX_OUTPUT_BUFFER);
        }
        // One byte past the limit is enough to know it was passed.
        let allowed = self
            .config
            .max_decompressed_bytes
            .saturating_sub(self.decoded)
            .saturating_add(1);
        let window =
            usize::try_from(allowed).map_or(self.output.len(), |a| a.min(self.output.len()));
        let result = pipeline.decode(&self.pending, self.input_ended, &mut self.output[..window]);
        let (read, written) = match result {
            Ok(progress) => progress,
            Err((coding, error)) => {
                return Step::Fail(Box::new(InvalidCompressedBody::new(coding.as_str(), error)));
            }
        };
        self.pending.advance(read);
        self.decoded += written as u64;
        self.stats.add_decoded(written as u64);
        if self.decoded > self.config.max_decompressed_bytes {
            return Step::Fail(
                self.exceeded(BodyLimit::Decompressed, self.config.max_decompressed_bytes),
            );
        }
        if let Some(ratio) = self.config.max_ratio {
            if self.decoded >= RATIO_CHECK_AFTER_BYTES
                && self.decoded > self.received.saturating_mul(u64::from(ratio))
            {
                return Step::Fail(self.exceeded(BodyLimit::Ratio, u64::from(ratio)));
            }
        }
        if written > 0 {
            return Step::Yield(Frame::data(self.output.split_to(written).freeze()));
        }
        if read > 0 || pipeline.is_done() {
            return Step::Continue;
        }
        if self.input_ended || !self.pending.is_empty() {
            // Nothing moved although everything there is to decode is here.
            return Step::Fail(Box::new(InvalidCompressedBody::new(
                pipeline.unfinished_coding().as_str(),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the compressed stream ends early",
                ),
            )));
        }
        Step::NeedInput
    }

    fn exceeded(&self, limit: BodyLimit, value: u64) -> BoxError {
        self.stats.set_exceeded_with_value(limit, value);
        length_limit_error()
    }
}
