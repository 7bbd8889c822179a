//! The request body handed to the inner service: decoded, counted and bounded while it streams.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use polytomic_webhook_core::body::{
    BodyLimit, BodyStats, BodyStatsWriter, BoxError, InvalidCompressedBody, length_limit_error,
};

use crate::coding::{Coding, Codings, UnsupportedContentEncoding};
use crate::config::{DecompressionConfig, RATIO_CHECK_AFTER_BYTES};
use crate::pipeline::{Pipeline, Progress};

/// The three bytes every gzip stream starts with: ID1, ID2 and CM = 8 (deflate).
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// Decoded output is written straight into `Bytes` carved from buffers of this size (doubling
/// per buffer up to [`MAX_OUTPUT_BUFFER`]), so a large body is yielded in few, large frames.
const MIN_OUTPUT_BUFFER: usize = 32 * 1024;
const MAX_OUTPUT_BUFFER: usize = 1024 * 1024;

/// Decoding work (input consumed plus what every stage produced) after which the body hands
/// its thread back to the runtime before decoding more. A small body can still ask for a lot
/// of work (stacked codings, or a gzip header comment that never ends, swallow output without
/// yielding any), so without this one request could hold a worker thread, and keep its own
/// body deadline from being checked, for as long as its limits allow. 1 MiB is a millisecond
/// or two of inflate: frequent enough for other requests, rare enough to cost nothing.
const WORK_PER_POLL: usize = 1024 * 1024;

pin_project! {
    /// A request body that decodes its content coding as it streams, within the configured limits.
    ///
    /// Created by [`Decompression`](crate::Decompression). Its errors are boxed:
    /// - [`http_body_util::LengthLimitError`](https://docs.rs/http-body-util/latest/http_body_util/struct.LengthLimitError.html) when a limit fires (axum's extractors answer 413;
    ///   the request's [`BodyStats`] extension says which limit),
    /// - [`InvalidCompressedBody`] when the data cannot be decoded,
    /// - [`UnsupportedContentEncoding`] when built with more codings than its configuration
    ///   accepts (the layer refuses those before it builds one),
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
    stats: BodyStatsWriter,
    received: u64,
    decoded: u64,
    /// Received bytes not yet decoded (or, while sniffing, not yet classified).
    pending: Bytes,
    /// Frames that arrived while `pending` still held input: read ahead, so that the inner
    /// body (and the deadline it may enforce) is polled during a long decode. Empty whenever
    /// `pending` is.
    queued: VecDeque<Bytes>,
    /// Decoding work done since the body last returned `Pending`.
    work: usize,
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
    /// More codings declared than the configuration accepts: fails at once, unread.
    Refused {
        allowed: usize,
    },
    /// Ended, cleanly or with an error already yielded; the inner body is not polled again.
    Finished,
}

impl<B> DecompressionBody<B> {
    /// Wraps `inner`, which the sender encoded with `codings`.
    ///
    /// More codings than `config` accepts ([`max_codings`](DecompressionConfig::max_codings))
    /// make the body fail on its first poll with
    /// [`UnsupportedContentEncoding::TooManyStacked`], reading nothing. With no codings, the body passes through unchanged (still bounded by the limits) unless
    /// `sniff_gzip` is on and it starts with the gzip magic bytes.
    pub fn new(inner: B, codings: &Codings, config: DecompressionConfig) -> Self {
        Self::with_stats(inner, codings, config, BodyStatsWriter::new())
    }

    /// [`new`](Self::new), counting into `stats`, whose [`BodyStats`] say afterwards how many
    /// bytes were received and decoded and which limit fired.
    pub fn with_stats(
        inner: B,
        codings: &Codings,
        config: DecompressionConfig,
        stats: BodyStatsWriter,
    ) -> Self {
        let allowed = config.codings_allowed();
        let mode = match Pipeline::new(codings, config.max_decompressed_bytes) {
            // The layer refuses these before it builds a body; built by hand, the body keeps
            // the same bound on the decoding work.
            _ if codings.len() > allowed => Mode::Refused { allowed },
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
                queued: VecDeque::new(),
                work: 0,
                input_ended: false,
                trailers: None,
                output: BytesMut::new(),
                next_output_buffer: MIN_OUTPUT_BUFFER,
            },
        }
    }

    /// The counters of this body, shared with the request's [`BodyStats`] extension.
    pub fn stats(&self) -> &BodyStats {
        self.state.stats.stats()
    }
}

/// What one turn of the state machine decided.
enum Step {
    Yield(Frame<Bytes>),
    Fail(BoxError),
    NeedInput,
    /// [`WORK_PER_POLL`] is spent: let the runtime run something else first.
    YieldToRuntime,
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
                Step::Fail(error) => return this.state.fail(error),
                Step::End => {
                    this.state.mode = Mode::Finished;
                    return Poll::Ready(this.state.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                Step::Continue => {}
                Step::NeedInput => match this.state.poll_input(this.inner.as_mut(), cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => return this.state.fail(error),
                    Poll::Pending => {
                        this.state.work = 0;
                        return Poll::Pending;
                    }
                },
                Step::YieldToRuntime => {
                    // A read ahead, so that an inner body that fails on its own (a deadline,
                    // a broken connection) can say so even while the decoder is busy.
                    if !this.state.input_ended {
                        if let Poll::Ready(Err(error)) =
                            this.state.poll_input(this.inner.as_mut(), cx)
                        {
                            return this.state.fail(error);
                        }
                    }
                    this.state.work = 0;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
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
    /// Polls `inner` for one frame and takes it in: data is counted and queued, trailers or the
    /// end mark the input as ended.
    fn poll_input<B>(
        &mut self,
        inner: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BoxError>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let Poll::Ready(frame) = inner.poll_frame(cx) else {
            return Poll::Pending;
        };
        Poll::Ready(match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => self.receive(data.copy_to_bytes(data.remaining())),
                Err(frame) => {
                    self.trailers = frame.into_trailers().ok();
                    self.input_ended = true;
                    Ok(())
                }
            },
            Some(Err(error)) => Err(error.into()),
            None => {
                self.input_ended = true;
                Ok(())
            }
        })
    }

    /// Ends the body with `error`; the inner body is not polled again.
    fn fail(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.mode = Mode::Finished;
        Poll::Ready(Some(Err(error)))
    }

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
        if self.pending.is_empty() {
            self.pending = data;
        } else if matches!(self.mode, Mode::Sniffing) {
            // The first frames held fewer than three bytes: the magic must be seen whole.
            self.pending = [&self.pending[..], &data[..]].concat().into();
        } else {
            self.queued.push_back(data);
        }
        Ok(())
    }

    /// Takes the first queued frame once `pending` is used up.
    fn refill(&mut self) {
        if self.pending.is_empty() {
            self.pending = self.queued.pop_front().unwrap_or_default();
        }
    }

    fn step(&mut self) -> Step {
        match &mut self.mode {
            Mode::Finished => Step::End,
            Mode::Refused { allowed } => {
                Step::Fail(Box::new(UnsupportedContentEncoding::TooManyStacked {
                    allowed: *allowed,
                }))
            }
            Mode::Sniffing => {
                if self.pending.len() < GZIP_MAGIC.len() && !self.input_ended {
                    return Step::NeedInput;
                }
                let gzip = Some(&self.pending)
                    .filter(|pending| pending.starts_with(&GZIP_MAGIC))
                    .and_then(|_| {
                        Pipeline::new(
                            &Codings::from(Coding::Gzip),
                            self.config.max_decompressed_bytes,
                        )
                    });
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
                self.refill();
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
                if self.work >= WORK_PER_POLL {
                    return Step::YieldToRuntime;
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
        // Input is handed over a budget's worth at a time: a decoder may scan all it is given
        // in one call (a gzip header comment is skipped without producing anything).
        let budget = WORK_PER_POLL.saturating_sub(self.work);
        let input = &self.pending[..self.pending.len().min(budget)];
        let input_ended =
            self.input_ended && self.queued.is_empty() && input.len() == self.pending.len();
        let result = pipeline.decode(input, input_ended, &mut self.output[..window], budget);
        let Progress {
            read,
            written,
            work,
        } = match result {
            Ok(progress) => progress,
            Err((coding, error)) => {
                return Step::Fail(Box::new(InvalidCompressedBody::new(coding.as_str(), error)));
            }
        };
        let done = pipeline.is_done();
        let unfinished = pipeline.unfinished_coding();
        let intermediate = pipeline.intermediate_output();
        self.work += work;
        self.pending.advance(read);
        self.refill();
        self.decoded += written as u64;
        self.stats.add_decoded(written as u64);
        // Output no one sees is still work: every stage answers to the same limits.
        if let Some((limit, value)) = self.passed_limit(self.decoded.max(intermediate)) {
            return Step::Fail(self.exceeded(limit, value));
        }
        if written > 0 {
            return Step::Yield(Frame::data(self.output.split_to(written).freeze()));
        }
        if work > 0 || done {
            return Step::Continue;
        }
        if self.input_ended || !self.pending.is_empty() {
            // Nothing moved although everything there is to decode is here.
            return Step::Fail(Box::new(InvalidCompressedBody::new(
                unfinished.as_str(),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the compressed stream ends early",
                ),
            )));
        }
        Step::NeedInput
    }

    /// The limit that `produced` decoded bytes pass, with its configured value, if any.
    fn passed_limit(&self, produced: u64) -> Option<(BodyLimit, u64)> {
        let max = self.config.max_decompressed_bytes;
        if produced > max {
            return Some((BodyLimit::Decompressed, max));
        }
        let ratio = self.config.max_ratio?;
        (produced >= RATIO_CHECK_AFTER_BYTES
            && produced > self.received.saturating_mul(u64::from(ratio)))
        .then_some((BodyLimit::Ratio, u64::from(ratio)))
    }

    fn exceeded(&self, limit: BodyLimit, value: u64) -> BoxError {
        self.stats.set_exceeded_with_value(limit, value);
        length_limit_error()
    }
}
