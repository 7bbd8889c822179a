//! JSON Lines outputs that stay JSON Lines: one batch per line, whatever the sender's
//! indentation, a crash half-way through a line, or a full disk.
//!
//! [`batch_line`] writes a batch as one compact line. A [`LineOutput`] appends such lines so
//! that every acknowledged line can be read back on its own:
//!
//! - on a **regular file**, a line that is not completely written is cut off again, and a
//!   file left with a partial last line (a process killed while writing it) is cut back to its
//!   last complete line when it is opened;
//! - on a **stream** (a pipe, a terminal), where nothing can be taken back, the line after a
//!   write that stopped half-way starts with a newline, so it is never glued onto the
//!   fragment.
//!
//! A [`LineWriter`] runs a `LineOutput` on a thread of its own, so that a consumer that stops
//! reading blocks that thread, never a runtime worker: a delivery hands its line over and waits
//! at most a set time ([`DEFAULT_WAIT`]) for the write, and a line whose wait ran out before
//! its write started is never written.
//!
//! `serve --out` and the receiver example write through it; it lives here, next to the sinks,
//! because both already depend on this crate.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use polytomic_webhook_core::Problem;
use polytomic_webhook_event::org::PolytomicOrgEvent;
use polytomic_webhook_event::{RawJson, SyncRecords};
use tokio::sync::{mpsc, oneshot, watch};

/// `batch` as one line of JSON, newline included: `{"id":…,"name":…,"records":[{"hash":…,
/// "fields":{…}}],"metadata":{…}}`, the shape `SyncRecords` serializes to, with the fields and
/// the metadata compact ([`RawFields::compact`](polytomic_webhook_event::RawFields::compact)):
/// their strings and numbers byte for byte, the whitespace between tokens left out, so an
/// indented delivery still gives one line.
///
/// ```
/// use polytomic_webhook_event::{EventConfig, parse_sync_records};
///
/// let body = b"{\"event\":\"sync.records\",\"object\":{\"id\":\"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7\",
///     \"name\":\"Users\",\"records\":[{\"hash\":\"h\",\"fields\":{\r\n\t\"id\": 1e400\n}}]}}";
/// let batch = parse_sync_records(body, &EventConfig::default()).unwrap();
/// assert_eq!(
///     polytomic_webhook_store::lines::batch_line(&batch).unwrap(),
///     b"{\"id\":\"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7\",\"name\":\"Users\",\
///       \"records\":[{\"hash\":\"h\",\"fields\":{\"id\":1e400}}],\"metadata\":{}}\n",
/// );
/// ```
///
/// # Errors
///
/// None in practice: the strings are written by serde_json into memory.
pub fn batch_line(batch: &SyncRecords) -> serde_json::Result<Vec<u8>> {
    let fields: usize = batch
        .iter()
        .map(|record| record.fields().as_str().len())
        .sum();
    let mut line = Vec::with_capacity(fields + 64 * batch.len() + 128);
    line.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut line, batch.id().as_str())?;
    line.extend_from_slice(b",\"name\":");
    serde_json::to_writer(&mut line, batch.name())?;
    line.extend_from_slice(b",\"records\":[");
    for (index, record) in batch.iter().enumerate() {
        if index > 0 {
            line.push(b',');
        }
        line.extend_from_slice(b"{\"hash\":");
        serde_json::to_writer(&mut line, record.hash().as_str())?;
        // Validated JSON text without whitespace is still valid JSON: no re-parse needed.
        line.extend_from_slice(b",\"fields\":");
        line.extend_from_slice(record.fields().compact().as_bytes());
        line.push(b'}');
    }
    line.extend_from_slice(b"],\"metadata\":");
    line.extend_from_slice(batch.metadata().compact().as_bytes());
    line.extend_from_slice(b"}\n");
    Ok(line)
}

/// One organisation event as one line of JSON, newline included: `{"event_id":…,"type":…,
/// "organization_id":…,"created_at":…,"payload":{…}}`, the payload as received but compact
/// (its strings and numbers byte for byte, without the whitespace between tokens), so it is
/// one line. The receiver example and `serve --events-secret` print events so.
///
/// ```
/// use polytomic_webhook_event::org::{RawPayload, parse_org_event};
///
/// let event = parse_org_event::<RawPayload>(
///     br#"{"id":"e1","organization_id":"o1","type":"sync.completed",
///          "created_at":"2024-05-01T12:00:00Z","event":{
///            "total_records": 7
///          }}"#,
/// )?;
/// assert_eq!(
///     String::from_utf8(polytomic_webhook_store::lines::event_line(&event)?)?,
///     "{\"event_id\":\"e1\",\"type\":\"sync.completed\",\"organization_id\":\"o1\",\
///      \"created_at\":\"2024-05-01T12:00:00Z\",\"payload\":{\"total_records\":7}}\n",
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// None in practice: the payload is JSON the parser validated, written into memory.
pub fn event_line(event: &PolytomicOrgEvent) -> serde_json::Result<Vec<u8>> {
    let payload: RawJson = event.payload().as_str().parse()?;
    let payload = payload.compact();
    let mut line = Vec::with_capacity(payload.len() + 256);
    line.extend_from_slice(b"{\"event_id\":");
    serde_json::to_writer(&mut line, event.id())?;
    line.extend_from_slice(b",\"type\":");
    serde_json::to_writer(&mut line, event.kind())?;
    line.extend_from_slice(b",\"organization_id\":");
    serde_json::to_writer(&mut line, event.organization_id())?;
    line.extend_from_slice(b",\"created_at\":");
    serde_json::to_writer(&mut line, &event.created_at())?;
    // Validated JSON text without whitespace is still valid JSON: no re-parse needed.
    line.extend_from_slice(b",\"payload\":");
    line.extend_from_slice(payload.as_bytes());
    line.extend_from_slice(b"}\n");
    Ok(line)
}

/// A regular file that lines are appended to; [`File`] is one. A trait so that a test can make
/// writes fail half-way, as a full disk does.
///
/// ```
/// use polytomic_webhook_store::lines::AppendFile;
///
/// let file: Box<dyn AppendFile> = Box::new(std::fs::File::create("/dev/null")?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait AppendFile: Write + Send {
    /// The file's length now.
    fn size(&self) -> io::Result<u64>;
    /// Cuts the file back to `len` bytes, and writes after it from there on.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Waits until the written data is on disk.
    fn sync_data(&self) -> io::Result<()>;
}

impl AppendFile for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)?;
        // Without O_APPEND (stdout redirected with `>`) the next write would land at the old
        // offset, past the end, and leave a hole of zero bytes before it.
        self.seek(SeekFrom::End(0)).map(drop)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// Where lines go: a regular file, or a stream. Each [`append`](Self::append) is one whole
/// line or, as far as a reader can tell, nothing.
///
/// ```
/// use polytomic_webhook_store::lines::LineOutput;
///
/// let mut out = LineOutput::stream(Box::new(Vec::new()));
/// out.append(b"{\"a\":1}\n")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct LineOutput {
    kind: Kind,
    repaired: u64,
}

enum Kind {
    /// A line that is not completely written is cut off again, so every line in the file is a
    /// whole batch; after a failure to cut it off, nothing more is written.
    File {
        file: Box<dyn AppendFile>,
        fsync: bool,
        broken: bool,
    },
    /// A partial line cannot be taken back: the next line starts on a fresh one instead.
    Stream {
        out: Box<dyn Write + Send>,
        mid_line: bool,
        /// The same descriptor as `out`, when it is one, to wait until it can take a line.
        polled: Option<File>,
    },
}

impl fmt::Debug for LineOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::File { .. } => "file",
            Kind::Stream { .. } => "stream",
        };
        f.debug_struct("LineOutput").field("kind", &kind).finish()
    }
}

impl LineOutput {
    /// A regular file, opened for appending. `reader` reads the same file: when the file does
    /// not end in a newline, its partial last line (never acknowledged: a process was killed
    /// while writing it) is cut off, so the next line starts on a line of its own. With
    /// `fsync`, every line is on disk before [`append`](Self::append) returns.
    ///
    /// # Errors
    ///
    /// When the file's end cannot be read or cut back.
    pub fn file(mut file: File, reader: &mut File, fsync: bool) -> io::Result<Self> {
        let repaired = cut_partial_line(&mut file, reader)?;
        let mut output = Self::append_file(Box::new(file), fsync);
        output.repaired = repaired;
        Ok(output)
    }

    /// Any [`AppendFile`], taken as it is (nothing is cut at the start).
    pub fn append_file(file: Box<dyn AppendFile>, fsync: bool) -> Self {
        Self {
            kind: Kind::File {
                file,
                fsync,
                broken: false,
            },
            repaired: 0,
        }
    }

    /// A stream (a pipe, a terminal, a device): nothing written can be taken back.
    pub fn stream(out: Box<dyn Write + Send>) -> Self {
        Self {
            kind: Kind::Stream {
                out,
                mid_line: false,
                polled: None,
            },
            repaired: 0,
        }
    }

    /// A stream that is a descriptor (a pipe, a FIFO, a terminal): like
    /// [`stream`](Self::stream), and a [`LineWriter`] can wait until it takes a line, so
    /// that a line is given up whole, never half-way, when the reader stops.
    ///
    /// # Errors
    ///
    /// When the descriptor cannot be duplicated.
    pub fn pipe(file: File) -> io::Result<Self> {
        let polled = Some(file.try_clone()?);
        let mut output = Self::stream(Box::new(file));
        if let Kind::Stream { polled: slot, .. } = &mut output.kind {
            *slot = polled;
        }
        Ok(output)
    }

    /// Standard output, unbuffered: as a regular file (repaired at the start) when it is
    /// redirected to one, else as a stream.
    ///
    /// # Errors
    ///
    /// When standard output is a regular file whose end cannot be read or cut back.
    pub fn stdout() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            // A handle of our own on descriptor 1: the std handle buffers, and a buffer that
            // kept half a line after a failure would send it later, out of place.
            if let Ok(fd) = io::stdout().as_fd().try_clone_to_owned() {
                let file = File::from(fd);
                if file.metadata().is_ok_and(|meta| meta.is_file()) {
                    // `>>` opens it write-only: read it through a description of its own.
                    #[cfg(target_os = "linux")]
                    if let Ok(mut reader) = File::open("/proc/self/fd/1") {
                        return Self::file(file, &mut reader, false);
                    }
                    return Ok(Self::append_file(Box::new(file), false));
                }
                return Self::pipe(file);
            }
        }
        Ok(Self::stream(Box::new(io::stdout())))
    }

    /// How many bytes of a partial last line were cut off when the file was opened (0 when it
    /// ended in a newline): a caller logs it, since that tail was never acknowledged.
    pub fn repaired(&self) -> u64 {
        self.repaired
    }

    /// Whether the output is a regular file (else a stream).
    pub fn is_file(&self) -> bool {
        matches!(self.kind, Kind::File { .. })
    }

    /// Writes `line` (which ends in a newline) in one piece; `Ok` only when all of it is
    /// written (and, with `fsync`, on disk).
    ///
    /// # Errors
    ///
    /// When the line could not be written whole: on a file it is cut off again; on a stream
    /// the next line starts on a fresh line.
    pub fn append(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_line(line).map(drop)
    }

    /// [`append`](Self::append); on a file, the length it had before, to cut the line off
    /// again with [`take_back`](Self::take_back).
    fn write_line(&mut self, line: &[u8]) -> io::Result<Option<u64>> {
        match &mut self.kind {
            Kind::Stream { out, mid_line, .. } => {
                let prefixed;
                let data = if *mid_line {
                    prefixed = [b"\n", line].concat();
                    &prefixed[..]
                } else {
                    line
                };
                write_counted(&mut **out, data, mid_line).and_then(|()| out.flush())?;
                Ok(None)
            }
            Kind::File {
                file,
                fsync,
                broken,
            } => {
                if *broken {
                    return Err(io::Error::other(
                        "an earlier partly written line could not be removed from the file",
                    ));
                }
                let before = file.size()?;
                let written = file
                    .write_all(line)
                    .and_then(|()| file.flush())
                    .and_then(|()| if *fsync { file.sync_data() } else { Ok(()) });
                let Err(error) = written else {
                    return Ok(Some(before));
                };
                match file.set_len(before) {
                    Ok(()) => Err(error),
                    Err(cut) => {
                        *broken = true;
                        Err(io::Error::new(
                            error.kind(),
                            format!(
                                "{error}; the partly written line cannot be removed ({cut}), \
                                 so every further line is refused"
                            ),
                        ))
                    }
                }
            }
        }
    }

    /// Cuts a file back to `before` (a line written whole but given up meanwhile); after a
    /// failure to, nothing more is written, as after a partial line.
    fn take_back(&mut self, before: u64) {
        if let Kind::File {
            file,
            fsync,
            broken,
        } = &mut self.kind
        {
            let cut = file
                .set_len(before)
                .and_then(|()| if *fsync { file.sync_data() } else { Ok(()) });
            *broken |= cut.is_err();
        }
    }

    /// Waits until the output can take the first bytes of a line without blocking, until
    /// `deadline` at the latest; `false` when it could not by then. Only a [`pipe`](Self::pipe)
    /// can be waited for: anything else counts as ready.
    fn writable_by(&self, deadline: Instant) -> io::Result<bool> {
        #[cfg(unix)]
        if let Kind::Stream {
            polled: Some(file), ..
        } = &self.kind
        {
            use rustix::event::{PollFd, PollFlags, Timespec, poll};
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let timeout = Timespec::try_from(left).map_err(io::Error::other)?;
                // Linux reports a pipe writable when a whole page (PIPE_BUF, 4096 bytes) is
                // free, and a write of up to PIPE_BUF bytes is atomic: a line that fits is
                // then written whole at once. A longer one may still block part-way.
                let mut fds = [PollFd::new(file, PollFlags::OUT)];
                match poll(&mut fds, Some(&timeout)) {
                    Ok(0) => return Ok(false),
                    // Writable, or an error or hang-up that the write itself reports.
                    Ok(_) => return Ok(true),
                    Err(rustix::io::Errno::INTR) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let _ = deadline;
        Ok(true)
    }
}

/// How long a delivery waits by default for its line to be written before it is answered
/// 503 `batch_not_stored`: far above a healthy write (microseconds), and short enough that a
/// stopped reader holds a delivery's place for seconds, not until its client gives up.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// How many lines wait at most for the writer thread; a delivery beyond them waits (within
/// its wait) for a place. Above the default number of deliveries in flight, so that a healthy
/// output never makes one wait for a place.
pub const QUEUE: usize = 256;

/// A [`LineOutput`] on a dedicated thread, behind a bounded queue: [`append`](Self::append)
/// hands a line over and waits for the thread's result, at most [`wait`](Self::wait), so a
/// runtime worker never blocks on a full pipe or a slow disk. Clones share the thread; it ends
/// when the last clone is dropped.
///
/// A line is acknowledged (`Ok`) only once it is written whole, and on a file with `fsync`
/// on disk, exactly as [`LineOutput::append`]. When the wait runs out first:
///
/// - a line whose write has not started is never written (on a [`pipe`](LineOutput::pipe),
///   the thread waits until the pipe can take it, and gives it up at its deadline);
/// - a line being written on a file is cut off again once its write returns;
/// - a line being written on a stream cannot be taken back: it may still appear, whole,
///   once the reader resumes, and the [`NotWritten`] answer says so.
///
/// While a line has been given up and the output has not taken one since (or, for a pipe,
/// still cannot), [`is_ready`](Self::is_ready) is `false`: a `/readyz` built on it answers
/// 503 while the output is stalled.
///
/// ```
/// use std::time::Duration;
/// use polytomic_webhook_store::lines::{LineOutput, LineWriter};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let writer = LineWriter::spawn(LineOutput::stream(Box::new(std::io::sink())), Duration::from_secs(5))?;
/// writer.append(b"{\"a\":1}\n".to_vec()).await?;
/// assert!(writer.is_ready());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct LineWriter {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    opened: watch::Receiver<Opening>,
    wait: Duration,
}

/// What the writer thread and the deliveries share.
#[derive(Default)]
struct Shared {
    /// The output is open (a FIFO waits for a reader first).
    open: AtomicBool,
    /// The output is a file, so a line given up during its write is cut off again.
    is_file: AtomicBool,
    /// A line was given up at its deadline, and the output has taken none since.
    stalled: AtomicBool,
}

#[derive(Clone)]
enum Opening {
    Pending,
    Open,
    Failed(String),
}

/// One line handed to the thread.
struct Job {
    line: Vec<u8>,
    deadline: Instant,
    state: Arc<AtomicU8>,
    done: oneshot::Sender<io::Result<()>>,
}

/// A job's state: queued (or waiting for the output) and still cancellable; being written;
/// finished; given up by its delivery or at its deadline.
const QUEUED: u8 = 0;
const WRITING: u8 = 1;
const DONE: u8 = 2;
const GIVEN_UP: u8 = 3;

impl fmt::Debug for LineWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineWriter")
            .field("wait", &self.wait)
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl LineWriter {
    /// Starts the writer thread over `output`; each line waits at most `wait`.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn spawn(output: LineOutput, wait: Duration) -> io::Result<Self> {
        Self::opening(move || Ok(output), wait)
    }

    /// Starts the writer thread, which first calls `open` for its output: a FIFO's open
    /// waits for a reader, and waits there rather than at start-up. Until it returns, the
    /// writer is not ready and lines wait (within their wait) to be written;
    /// [`opened`](Self::opened) says when it returned, and how.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn opening<F>(open: F, wait: Duration) -> io::Result<Self>
    where
        F: FnOnce() -> io::Result<LineOutput> + Send + 'static,
    {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let (opening, opened) = watch::channel(Opening::Pending);
        let thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("line-writer".to_owned())
            .spawn(move || match open() {
                Ok(output) => {
                    thread.is_file.store(output.is_file(), Ordering::SeqCst);
                    thread.open.store(true, Ordering::SeqCst);
                    opening.send_replace(Opening::Open);
                    write_lines(output, queue, &thread);
                }
                Err(error) => {
                    opening.send_replace(Opening::Failed(error.to_string()));
                }
            })?;
        Ok(Self {
            jobs,
            shared,
            opened,
            wait,
        })
    }

    /// How long a line waits at most.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Waits until the output is open; the error when it could not be opened.
    ///
    /// # Errors
    ///
    /// The error of the `open` given to [`opening`](Self::opening).
    pub async fn opened(&self) -> io::Result<()> {
        let mut opened = self.opened.clone();
        let state = opened
            .wait_for(|state| !matches!(state, Opening::Pending))
            .await
            .map(|state| state.clone())
            .unwrap_or(Opening::Failed("the writer thread stopped".to_owned()));
        match state {
            Opening::Failed(error) => Err(io::Error::other(error)),
            Opening::Open | Opening::Pending => Ok(()),
        }
    }

    /// Whether a line handed over now is expected to be written: the output is open and not
    /// stalled (no line given up since it last took one).
    pub fn is_ready(&self) -> bool {
        self.shared.open.load(Ordering::SeqCst) && !self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Hands `line` (which ends in a newline) to the writer thread and waits for it to be
    /// written whole, at most [`wait`](Self::wait).
    ///
    /// # Errors
    ///
    /// When the line could not be written (see [`LineOutput::append`]), or the wait ran out
    /// first (see the type's documentation for what then happens to the line).
    pub async fn append(&self, line: Vec<u8>) -> Result<(), NotWritten> {
        let state = Arc::new(AtomicU8::new(QUEUED));
        let abandoned = Abandoned(Some(Arc::clone(&state)));
        let result = self.append_job(line, state).await;
        abandoned.disarm();
        result
    }

    async fn append_job(&self, line: Vec<u8>, state: Arc<AtomicU8>) -> Result<(), NotWritten> {
        let deadline = Instant::now() + self.wait;
        let (done, mut result) = oneshot::channel();
        let job = Job {
            line,
            deadline,
            state: Arc::clone(&state),
            done,
        };
        let until = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(until, self.jobs.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(self.stopped()),
            Err(_) => return Err(self.gave_up(false)),
        }
        match tokio::time::timeout_at(until, &mut result).await {
            Ok(Ok(written)) => written.map_err(|error| NotWritten(Why::Failed(error))),
            // Dropped unanswered: given up by the thread at its deadline, or the thread ended.
            Ok(Err(_)) => Err(match state.load(Ordering::SeqCst) {
                GIVEN_UP => self.gave_up(false),
                _ => self.stopped(),
            }),
            Err(_) => {
                let started = match state.compare_exchange(
                    QUEUED,
                    GIVEN_UP,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) | Err(GIVEN_UP) => false,
                    Err(_) => {
                        match state.compare_exchange(
                            WRITING,
                            GIVEN_UP,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(_) => true,
                            // Finished just now: its result is on its way.
                            Err(_) => {
                                return match result.await {
                                    Ok(written) => {
                                        written.map_err(|error| NotWritten(Why::Failed(error)))
                                    }
                                    Err(_) => Err(self.stopped()),
                                };
                            }
                        }
                    }
                };
                Err(self.gave_up(started))
            }
        }
    }

    fn gave_up(&self, started: bool) -> NotWritten {
        self.shared.stalled.store(true, Ordering::SeqCst);
        NotWritten(Why::Waited {
            wait: self.wait,
            open: self.shared.open.load(Ordering::SeqCst),
            may_appear: started && !self.shared.is_file.load(Ordering::SeqCst),
        })
    }

    fn stopped(&self) -> NotWritten {
        let why = match &*self.opened.borrow() {
            Opening::Failed(error) => format!("the output could not be opened: {error}"),
            Opening::Open | Opening::Pending => "the writer thread stopped".to_owned(),
        };
        NotWritten(Why::Stopped(why))
    }
}

/// Gives a line up when its delivery's future is dropped before the answer (the client went
/// away): nobody was told it is kept, so it must not be kept, as when its wait runs out.
struct Abandoned(Option<Arc<AtomicU8>>);

impl Abandoned {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            let give_up = |from| {
                state
                    .compare_exchange(from, GIVEN_UP, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            };
            let _ = give_up(QUEUED) || give_up(WRITING);
        }
    }
}

/// The writer thread's loop, until every [`LineWriter`] is dropped.
fn write_lines(mut output: LineOutput, mut queue: mpsc::Receiver<Job>, shared: &Shared) {
    while let Some(job) = next_job(&output, &mut queue, shared) {
        write_job(&mut output, job, shared);
    }
}

/// The next line to write. While stalled, the thread also watches the output, so that readiness
/// comes back once it can take a line again, even if no delivery arrives meanwhile.
fn next_job(output: &LineOutput, queue: &mut mpsc::Receiver<Job>, shared: &Shared) -> Option<Job> {
    const LOOK_AGAIN: Duration = Duration::from_millis(50);
    loop {
        if shared.stalled.load(Ordering::SeqCst)
            && output.writable_by(Instant::now()).unwrap_or(false)
        {
            shared.stalled.store(false, Ordering::SeqCst);
        }
        if !shared.stalled.load(Ordering::SeqCst) {
            return queue.blocking_recv();
        }
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(LOOK_AGAIN),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
        }
    }
}

fn write_job(output: &mut LineOutput, job: Job, shared: &Shared) {
    if job.state.load(Ordering::SeqCst) != QUEUED {
        return;
    }
    match output.writable_by(job.deadline) {
        Ok(true) => {}
        Ok(false) => {
            // Never started: dropping `done` tells the delivery it was not written.
            job.state.store(GIVEN_UP, Ordering::SeqCst);
            shared.stalled.store(true, Ordering::SeqCst);
            return;
        }
        Err(error) => {
            let _ = job.done.send(Err(error));
            return;
        }
    }
    // The last moment the line can be given up whole: from here on it is being written.
    if job
        .state
        .compare_exchange(QUEUED, WRITING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    let written = output.write_line(&job.line);
    let finished = job
        .state
        .compare_exchange(WRITING, DONE, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    match written {
        Ok(before) => {
            shared.stalled.store(false, Ordering::SeqCst);
            if finished {
                let _ = job.done.send(Ok(()));
            } else if let Some(before) = before {
                // Given up while it was written: its delivery was answered 503, so it must
                // not stay in the file.
                output.take_back(before);
            }
        }
        Err(error) => {
            let _ = job.done.send(Err(error));
        }
    }
}

/// Why [`LineWriter::append`] did not write a line. Its answer
/// ([`problem`](Self::problem)) is 503 `batch_not_stored`; its `Display` is for the log.
///
/// ```
/// use std::time::Duration;
/// use polytomic_webhook_store::lines::{LineOutput, LineWriter};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let full = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
/// let writer = LineWriter::spawn(LineOutput::stream(Box::new(full)), Duration::from_secs(5))?;
/// let error = writer.append(b"{}\n".to_vec()).await.unwrap_err();
/// assert_eq!(error.problem().code(), "batch_not_stored");
/// assert!(!error.may_appear());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct NotWritten(Why);

#[derive(Debug)]
enum Why {
    /// The write failed; the line was cut off (file) or the next starts on a fresh line.
    Failed(io::Error),
    /// The wait ran out.
    Waited {
        wait: Duration,
        open: bool,
        may_appear: bool,
    },
    /// No writer thread to write it.
    Stopped(String),
}

impl NotWritten {
    /// Whether the line may still appear in the output: it was being written to a stream when
    /// its wait ran out, and a stream cannot take it back.
    pub fn may_appear(&self) -> bool {
        matches!(
            self.0,
            Why::Waited {
                may_appear: true,
                ..
            }
        )
    }

    /// The answer: 503 `batch_not_stored`, whose detail says when the line may still appear.
    pub fn problem(&self) -> Problem {
        let detail = if self.may_appear() {
            "The receiver's output stopped taking lines while this batch was being written: \
             the batch is not acknowledged, but its line may still appear in the output once \
             the output's reader resumes. Send it again later."
        } else {
            "The receiver could not write this batch to its output, so it was not kept. Send it \
             again later."
        };
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "batch_not_stored", detail)
    }
}

impl fmt::Display for NotWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Why::Failed(error) => error.fmt(f),
            Why::Waited { wait, open, .. } if !open => write!(
                f,
                "the output is not open yet (a FIFO waits for a reader): the line waited {} ms \
                 and was not written",
                wait.as_millis()
            ),
            Why::Waited {
                wait, may_appear, ..
            } => {
                write!(
                    f,
                    "the output took no line for {} ms (its reader stopped reading?): ",
                    wait.as_millis()
                )?;
                f.write_str(if *may_appear {
                    "this line was being written and may still appear once it reads again"
                } else {
                    "this line was not written"
                })
            }
            Why::Stopped(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for NotWritten {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Why::Failed(error) => Some(error),
            Why::Waited { .. } | Why::Stopped(_) => None,
        }
    }
}

impl IntoResponse for NotWritten {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

/// Writes all of `data`, keeping `mid_line` true while the last byte that got out is not a
/// newline: a write that stops half-way leaves it set.
fn write_counted(out: &mut dyn Write, mut data: &[u8], mid_line: &mut bool) -> io::Result<()> {
    while !data.is_empty() {
        match out.write(data) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(written) => {
                *mid_line = data[written - 1] != b'\n';
                data = &data[written..];
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Cuts `file` back to just after its last newline when it does not end in one; the number of
/// bytes cut.
fn cut_partial_line(file: &mut File, reader: &mut File) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let len = AppendFile::size(file)?;
    let mut end = len;
    if len == 0 {
        return Ok(0);
    }
    let mut buf = vec![0; 1];
    reader.seek(SeekFrom::Start(len - 1))?;
    reader.read_exact(&mut buf)?;
    if buf[0] == b'\n' {
        return Ok(0);
    }
    // Backwards, a chunk at a time: a torn line can be megabytes long.
    let keep = loop {
        let start = end.saturating_sub(CHUNK);
        buf.resize(usize::try_from(end - start).unwrap_or(0), 0);
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(&mut buf)?;
        if let Some(at) = buf.iter().rposition(|&byte| byte == b'\n') {
            break start + at as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    AppendFile::set_len(file, keep)?;
    Ok(len - keep)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A stream that takes `room` bytes and then fails, as a full pipe's reader that went away.
    struct Filling {
        data: Arc<std::sync::Mutex<Vec<u8>>>,
        room: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Write for Filling {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            use std::sync::atomic::Ordering;
            let room = self.room.load(Ordering::SeqCst);
            if room == 0 {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            let len = buf.len().min(room);
            self.room.fetch_sub(len, Ordering::SeqCst);
            self.data.lock().unwrap().extend_from_slice(&buf[..len]);
            Ok(len)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn on_a_stream_the_line_after_a_torn_one_starts_on_a_fresh_line() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let data = Arc::default();
        let room = Arc::new(AtomicUsize::new(12));
        let mut out = LineOutput::stream(Box::new(Filling {
            data: Arc::clone(&data),
            room: Arc::clone(&room),
        }));
        out.append(b"{\"n\":1}\n").unwrap();
        assert!(out.append(b"{\"n\":2}\n").is_err(), "only 4 bytes fit");
        // Nothing fits: still torn, and no blank line is owed for this failure.
        assert!(out.append(b"{\"n\":3}\n").is_err());
        room.store(usize::MAX, Ordering::SeqCst);
        out.append(b"{\"n\":4}\n").unwrap();
        out.append(b"{\"n\":5}\n").unwrap();
        assert_eq!(
            String::from_utf8(data.lock().unwrap().clone()).unwrap(),
            "{\"n\":1}\n{\"n\"\n{\"n\":4}\n{\"n\":5}\n"
        );
    }

    /// A line of `n` that fits in PIPE_BUF, so a pipe takes it whole or not at all.
    fn numbered(n: usize) -> Vec<u8> {
        format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(3000)).into_bytes()
    }

    fn numbers(data: &[u8]) -> Vec<usize> {
        std::str::from_utf8(data)
            .unwrap()
            .lines()
            .map(|line| {
                let n = serde_json::from_str::<serde_json::Value>(line).unwrap()["n"].as_u64();
                usize::try_from(n.unwrap()).unwrap()
            })
            .collect()
    }

    async fn until_ready(writer: &LineWriter) {
        let started = Instant::now();
        while !writer.is_ready() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never ready again"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipe_nobody_reads_gives_lines_up_whole_and_takes_them_again_once_read() {
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        let wait = Duration::from_millis(200);
        let writer =
            LineWriter::spawn(LineOutput::pipe(File::from(write_end)).unwrap(), wait).unwrap();
        let mut acknowledged = Vec::new();
        let refused = loop {
            let n = acknowledged.len() + 1;
            assert!(n < 10_000, "the pipe never filled");
            match writer.append(numbered(n)).await {
                Ok(()) => acknowledged.push(n),
                Err(refused) => break refused,
            }
        };
        assert!(!refused.may_appear(), "{refused}");
        assert_eq!(refused.problem().code(), "batch_not_stored");
        assert!(!writer.is_ready(), "stalled");
        // Lines queued behind it wait their own wait, and are given up too.
        let started = Instant::now();
        let queued: Vec<_> = (0..3)
            .map(|k| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.append(numbered(20_000 + k)).await })
            })
            .collect();
        for answer in queued {
            assert!(!answer.await.unwrap().unwrap_err().may_appear());
        }
        assert!(
            started.elapsed() < wait * 3,
            "each waited its own wait, not in turn"
        );

        let mut read_end = File::from(read_end);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            read_end.read_to_end(&mut all).unwrap();
            all
        });
        // Ready again once the pipe can take a line, without a delivery to show it.
        until_ready(&writer).await;
        writer.append(numbered(30_000)).await.unwrap();
        acknowledged.push(30_000);
        drop(writer);
        assert_eq!(numbers(&reader.join().unwrap()), acknowledged);
    }

    /// A file or stream whose writes wait until it is opened: a disk that hangs, a reader that
    /// stopped.
    #[derive(Clone, Default)]
    struct Gate {
        data: Arc<std::sync::Mutex<Vec<u8>>>,
        open: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    }

    impl Gate {
        fn release(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, opened) = &*self.open;
            drop(
                opened
                    .wait_while(open.lock().unwrap(), |open| !*open)
                    .unwrap(),
            );
            self.data.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl AppendFile for Gate {
        fn size(&self) -> io::Result<u64> {
            Ok(self.data.lock().unwrap().len() as u64)
        }

        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.data
                .lock()
                .unwrap()
                .truncate(usize::try_from(len).unwrap());
            Ok(())
        }

        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_line_whose_delivery_went_away_is_not_kept() {
        let gate = Gate::default();
        let output = LineOutput::append_file(Box::new(gate.clone()), false);
        let writer = LineWriter::spawn(output, Duration::from_secs(60)).unwrap();
        // The first line blocks the thread in its write; the second waits in the queue.
        let writing = tokio::spawn({
            let writer = writer.clone();
            async move { writer.append(numbered(1)).await }
        });
        let queued = tokio::spawn({
            let writer = writer.clone();
            async move { writer.append(numbered(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Both clients go away before an answer.
        writing.abort();
        queued.abort();
        let _ = (writing.await, queued.await);
        gate.release();
        writer.append(numbered(3)).await.unwrap();
        assert_eq!(numbers(&gate.data.lock().unwrap()), [3]);
    }

    #[tokio::test]
    async fn a_line_given_up_during_its_write_is_cut_off_a_file_and_said_to_maybe_appear_on_a_stream()
     {
        for is_file in [true, false] {
            let gate = Gate::default();
            let output = if is_file {
                LineOutput::append_file(Box::new(gate.clone()), true)
            } else {
                LineOutput::stream(Box::new(gate.clone()))
            };
            let writer = LineWriter::spawn(output, Duration::from_millis(100)).unwrap();
            let refused = writer.append(numbered(1)).await.unwrap_err();
            assert_eq!(refused.may_appear(), !is_file, "{refused}");
            let problem = refused.problem();
            assert_eq!(problem.code(), "batch_not_stored");
            assert_eq!(problem.detail().contains("may still appear"), !is_file);
            assert!(!writer.is_ready());
            gate.release();
            until_ready(&writer).await;
            writer.append(numbered(2)).await.unwrap();
            let expected: &[usize] = if is_file { &[2] } else { &[1, 2] };
            assert_eq!(
                numbers(&gate.data.lock().unwrap()),
                expected,
                "file: {is_file}"
            );
        }
    }
}
