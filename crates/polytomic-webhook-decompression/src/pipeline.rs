//! Synchronous decoding: a chain of push-style decoders, one per stacked coding.
//!
//! The codecs come from `async_compression::codecs`: they take an input slice and an output
//! slice and report progress, with no I/O traits in between. That lets the body feed each frame
//! straight from the wire into the decoder and decode straight into the `Bytes` it yields,
//! with no intermediate reader or second buffer.

use std::io;

use async_compression::codecs::DecodeV2;
use async_compression::core::util::{PartialBuffer, WriteBuffer};

use crate::coding::{Coding, Codings};

/// One compiled-in decoder.
// At most three per request, made once: boxing the gzip state to even out the variants would
// add an allocation for nothing. The sizes differ only in some feature sets (br and gzip
// without zstd), so the lint fires only there.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Codec {
    #[cfg(feature = "gzip")]
    Gzip(async_compression::codecs::GzipDecoder),
    #[cfg(feature = "deflate")]
    Deflate(async_compression::codecs::ZlibDecoder),
    #[cfg(feature = "br")]
    Brotli(async_compression::codecs::BrotliDecoder),
    #[cfg(feature = "zstd")]
    Zstd(async_compression::codecs::ZstdDecoder),
}

/// zstd frames declare their own window size, up to 2 GiB; capping it at 8 MiB bounds the
/// decoder's memory whatever the sender claims (the zstd CLI's default level uses far less).
#[cfg(feature = "zstd")]
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

impl Codec {
    /// The decoder for `coding`; `None` when its feature is off (callers check first).
    fn new(coding: Coding) -> Option<Self> {
        match coding {
            #[cfg(feature = "gzip")]
            Coding::Gzip => Some(Self::Gzip(Default::default())),
            #[cfg(feature = "deflate")]
            Coding::Deflate => Some(Self::Deflate(Default::default())),
            #[cfg(feature = "br")]
            Coding::Brotli => Some(Self::Brotli(Default::default())),
            #[cfg(feature = "zstd")]
            Coding::Zstd => Some(Self::Zstd(
                async_compression::codecs::ZstdDecoder::new_with_params(&[
                    async_compression::zstd::DParameter::window_log_max(ZSTD_WINDOW_LOG_MAX),
                ]),
            )),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    fn decoder(&mut self) -> &mut dyn DecodeV2 {
        match *self {
            #[cfg(feature = "gzip")]
            Self::Gzip(ref mut decoder) => decoder,
            #[cfg(feature = "deflate")]
            Self::Deflate(ref mut decoder) => decoder,
            #[cfg(feature = "br")]
            Self::Brotli(ref mut decoder) => decoder,
            #[cfg(feature = "zstd")]
            Self::Zstd(ref mut decoder) => decoder,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Decoding,
    /// The codec saw the end of a stream (or the input ended): drain it and check it is whole.
    Finishing,
    /// A gzip member or zstd frame ended cleanly; another may follow.
    BetweenMembers,
    Done,
}

/// One coding's decoder plus the stream-level rules around it.
#[derive(Debug)]
struct Stage {
    coding: Coding,
    codec: Codec,
    phase: Phase,
    /// gzip members and zstd frames may be concatenated; the result is their concatenation.
    multi_member: bool,
    /// The last call filled the output, so the codec may hold more decoded bytes.
    output_was_full: bool,
    /// Bytes this stage has decoded so far.
    produced: u64,
}

impl Stage {
    fn new(coding: Coding) -> Option<Self> {
        Some(Self {
            coding,
            codec: Codec::new(coding)?,
            phase: Phase::Decoding,
            multi_member: matches!(coding, Coding::Gzip | Coding::Zstd),
            output_was_full: false,
            produced: 0,
        })
    }

    /// Decodes as much of `input` into `output` as fits. `input_ended` says that nothing
    /// follows what `input` holds, which is when a stream that stopped early is an error.
    fn step(
        &mut self,
        input: &mut PartialBuffer<&[u8]>,
        output: &mut WriteBuffer<'_>,
        input_ended: bool,
    ) -> io::Result<()> {
        loop {
            match self.phase {
                Phase::Decoding => {
                    if output.has_no_spare_space() {
                        self.output_was_full = true;
                        return Ok(());
                    }
                    if input.unwritten().is_empty() {
                        if self.output_was_full {
                            // The codec filled the previous output and may still hold decoded
                            // bytes that need no further input.
                            let drained = self.codec.decoder().flush(output)?;
                            self.output_was_full = !drained && output.has_no_spare_space();
                            continue;
                        }
                        if !input_ended {
                            return Ok(());
                        }
                        self.phase = Phase::Finishing;
                        continue;
                    }
                    let (read, written) = (input.written_len(), output.written_len());
                    let stream_ended = self.codec.decoder().decode(input, output)?;
                    self.output_was_full = output.has_no_spare_space();
                    if stream_ended {
                        self.phase = Phase::Finishing;
                    } else if input.written_len() == read && output.written_len() == written {
                        // The codec wants something it cannot have yet (more input or room).
                        return Ok(());
                    }
                }
                Phase::Finishing => {
                    if output.has_no_spare_space() {
                        return Ok(());
                    }
                    let written = output.written_len();
                    if self.codec.decoder().finish(output)? {
                        self.phase = if self.multi_member {
                            self.codec.decoder().reinit()?;
                            Phase::BetweenMembers
                        } else {
                            Phase::Done
                        };
                    } else if output.written_len() == written {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the compressed stream ends early",
                        ));
                    }
                }
                Phase::BetweenMembers => {
                    if !input.unwritten().is_empty() {
                        self.phase = Phase::Decoding;
                    } else if input_ended {
                        self.phase = Phase::Done;
                    } else {
                        return Ok(());
                    }
                }
                Phase::Done => {
                    return if input.unwritten().is_empty() {
                        Ok(())
                    } else {
                        Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "data follows the end of the compressed stream",
                        ))
                    };
                }
            }
        }
    }
}

/// Size of the buffer between two stacked decoders.
const STAGE_BUFFER_BYTES: usize = 32 * 1024;

/// Bytes produced by one stage and not yet consumed by the next.
#[derive(Debug)]
struct StageBuffer {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl StageBuffer {
    fn new() -> Self {
        Self {
            bytes: vec![0; STAGE_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    fn consume(&mut self, count: usize) {
        self.start += count;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The free tail, after moving pending bytes to the front if that makes room.
    fn spare(&mut self) -> &mut [u8] {
        if self.end == self.bytes.len() && self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.bytes[self.end..]
    }

    fn produced(&mut self, count: usize) {
        self.end += count;
    }
}

/// What one [`Pipeline::decode`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Input bytes consumed.
    pub(crate) read: usize,
    /// Output bytes written.
    pub(crate) written: usize,
    /// Input consumed plus what every stage produced: the measure of decoding work.
    pub(crate) work: usize,
}

/// The decoders for all of a request's codings, last applied first.
#[derive(Debug)]
pub(crate) struct Pipeline {
    stages: Vec<Stage>,
    /// `buffers[i]` holds the output of `stages[i]` for the next stage; the last stage writes
    /// straight into the caller's output.
    buffers: Vec<StageBuffer>,
    /// Bytes moved in or out of `buffers`, so a sweep can tell whether it did anything.
    moved: usize,
    /// Most bytes an intermediate stage may produce in all; it is stopped one byte past this,
    /// enough for the caller to see the limit was passed.
    max_stage_output: u64,
}

impl Pipeline {
    /// Decoders undoing `codings`, each intermediate stage stopped one byte past
    /// `max_stage_output`; `None` if a coding is not compiled in.
    pub(crate) fn new(codings: &Codings, max_stage_output: u64) -> Option<Self> {
        let stages = codings
            .iter()
            .rev()
            .map(Stage::new)
            .collect::<Option<Vec<_>>>()?;
        let buffers = (1..stages.len()).map(|_| StageBuffer::new()).collect();
        Some(Self {
            stages,
            buffers,
            moved: 0,
            max_stage_output,
        })
    }

    /// The most bytes any stage but the last has produced: output the caller never sees, yet
    /// decoding work all the same (a gzip header comment inside can swallow gigabytes of it).
    pub(crate) fn intermediate_output(&self) -> u64 {
        let intermediate = &self.stages[..self.stages.len().saturating_sub(1)];
        intermediate
            .iter()
            .map(|stage| stage.produced)
            .max()
            .unwrap_or(0)
    }

    /// The outermost coding whose stream has not ended, for a truncation error.
    pub(crate) fn unfinished_coding(&self) -> Coding {
        self.stages
            .iter()
            .find(|stage| stage.phase != Phase::Done)
            .or(self.stages.last())
            .map_or(Coding::Gzip, |stage| stage.coding)
    }

    /// Whether every stream ended cleanly and all output has been produced.
    pub(crate) fn is_done(&self) -> bool {
        self.stages.iter().all(|stage| stage.phase == Phase::Done)
            && self
                .buffers
                .iter()
                .all(|buffer| buffer.pending().is_empty())
    }

    /// Whether decoded bytes may be waiting inside the pipeline, to be had without more input.
    pub(crate) fn may_have_output(&self) -> bool {
        !self.is_done()
            && (self.stages.iter().any(|stage| stage.output_was_full)
                || self
                    .buffers
                    .iter()
                    .any(|buffer| !buffer.pending().is_empty()))
    }

    /// Decodes `input` into `output` until the output is full, nothing more can happen without
    /// more input, or `work_limit` bytes of work (see [`Progress::work`]) have been done; the
    /// limit is checked between sweeps, so a call may pass it by one sweep. Returns the
    /// progress, or the coding whose decoder failed and why.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        input_ended: bool,
        output: &mut [u8],
        work_limit: usize,
    ) -> Result<Progress, (Coding, io::Error)> {
        let mut progress = Progress {
            read: 0,
            written: 0,
            work: 0,
        };
        let last = self.stages.len() - 1;
        loop {
            let before_sweep = (progress.read, progress.written, self.moved);
            // Each sweep lets every stage consume what the one before produced.
            for index in 0..=last {
                let (earlier, later) = self.buffers.split_at_mut(index);
                let (source, source_ended) = match earlier.last() {
                    None => (&input[progress.read..], input_ended),
                    Some(buffer) => (
                        buffer.pending(),
                        self.stages[index - 1].phase == Phase::Done,
                    ),
                };
                let stage = &mut self.stages[index];
                let sink = match later.first_mut() {
                    Some(buffer) => {
                        let allowed = self
                            .max_stage_output
                            .saturating_add(1)
                            .saturating_sub(stage.produced);
                        let spare = buffer.spare();
                        let room = usize::try_from(allowed)
                            .map_or(spare.len(), |allowed| allowed.min(spare.len()));
                        &mut spare[..room]
                    }
                    None => &mut output[progress.written..],
                };
                let mut source = PartialBuffer::new(source);
                let mut sink = WriteBuffer::new_initialized(sink);
                stage
                    .step(&mut source, &mut sink, source_ended)
                    .map_err(|error| (stage.coding, error))?;
                let (consumed, produced) = (source.written_len(), sink.written_len());
                stage.produced += produced as u64;
                match earlier.last_mut() {
                    None => {
                        progress.read += consumed;
                        progress.work += consumed;
                    }
                    Some(buffer) => buffer.consume(consumed),
                }
                match later.first_mut() {
                    Some(buffer) => buffer.produced(produced),
                    None => progress.written += produced,
                }
                progress.work += produced;
                self.moved += consumed + produced;
            }
            if (progress.read, progress.written, self.moved) == before_sweep
                || progress.written == output.len()
                || progress.work >= work_limit
            {
                return Ok(progress);
            }
        }
    }
}
