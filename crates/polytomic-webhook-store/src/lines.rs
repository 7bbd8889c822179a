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
//! `serve --out` and the receiver example write through it; it lives here, next to the sinks,
//! because both already depend on this crate.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use polytomic_webhook_event::org::PolytomicOrgEvent;
use polytomic_webhook_event::{RawJson, SyncRecords};

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
    },
}

impl std::fmt::Debug for LineOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
            },
            repaired: 0,
        }
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
                return Ok(Self::stream(Box::new(file)));
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
        match &mut self.kind {
            Kind::Stream { out, mid_line } => {
                let prefixed;
                let data = if *mid_line {
                    prefixed = [b"\n", line].concat();
                    &prefixed[..]
                } else {
                    line
                };
                write_counted(&mut **out, data, mid_line).and_then(|()| out.flush())
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
                    return Ok(());
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
        data: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        room: std::sync::Arc<std::sync::atomic::AtomicUsize>,
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
        let data = std::sync::Arc::default();
        let room = std::sync::Arc::new(AtomicUsize::new(12));
        let mut out = LineOutput::stream(Box::new(Filling {
            data: std::sync::Arc::clone(&data),
            room: std::sync::Arc::clone(&room),
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
}
