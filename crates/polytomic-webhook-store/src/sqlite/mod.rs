//! [`SqliteSink`]: one SQLite file, for a receiver on one machine.

mod event_ids;
mod file;
mod known;
mod read;
mod row;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use polytomic_webhook_event::SyncRecords;
use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::{
    Durability, Identity, RecordStream, Sink, SinkError, SinkFuture, Stored, StoredRecord,
};
pub use event_ids::SqliteEventIdStore;
use file::{APPLICATION_ID, Access, Layout};
use known::{Known, Undo};
pub(crate) use read::record_stream;

/// How long a write waits for another connection (a `dump` reading, say) to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most batches committed in one transaction: bounds how long the first of them waits for
/// the others.
const MAX_GROUP: usize = 64;

/// A group takes no more batches once it holds this many records, so large batches are not
/// piled into one long transaction (a batch larger than this is a group of its own).
const MAX_GROUP_RECORDS: usize = 10_000;

/// The most jobs waiting for the writer; past it a delivery is refused at once (503) rather
/// than queued. Deliveries that gave up waiting leave their jobs behind, so without a bound a
/// stalled disk would let them pile up without end.
const MAX_WAITING: usize = 4 * MAX_GROUP;

/// How long a delivery waits for the writer to answer before it is told the sink is
/// unavailable (503), unless set with [`SqliteSink::answer_timeout`]. A stalled disk then
/// costs Polytomic a retry rather than a connection held open; a batch committed after its
/// delivery gave up is found unchanged when it is sent again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The checkpoint thread is asked for a pass each time the WAL has grown by this much.
const CHECKPOINT_STEP_BYTES: usize = 1 << 20;

/// Once the WAL is this long, the writer finishes a checkpoint itself: it copies what the
/// thread's passes left and syncs the file, so that the WAL starts again from its beginning. That holds the next commit off while it runs (tens of milliseconds where the
/// report ran, mostly the sync); 16 MiB, against SQLite's own 4 MiB, makes it rarer.
const CHECKPOINT_BYTES: usize = 16 << 20;

/// `AUTOINCREMENT` keeps `seq` growing even after rows are deleted, which is what lets a
/// writer find the rows other connections added since it last looked (`seq >` the last it saw).
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS batches (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        sync_id   TEXT NOT NULL,
        sync_name TEXT NOT NULL,
        records   TEXT NOT NULL
    );
";

/// Batches kept in one SQLite file, the embedded default.
///
/// The file is in WAL mode, with one table, `batches`: a row per batch that stored anything,
/// in store order (`seq`), holding the sync's id and name and the records it stored as one JSON
/// array of `[KEY, HASH, FIELDS]` (the key field's JSON text or `null`, the hash, the fields
/// exactly as received). Read it with [`Sink::records`] or [`Sink::record_stream`] (a page
/// at a time, through a read-only connection of its own), `polytomic-webhook dump`, or SQL:
///
/// ```sql
/// SELECT seq, sync_id, record.value ->> 1 AS hash, record.value -> 2 AS fields
/// FROM batches, json_each(batches.records) AS record ORDER BY seq, record.key;
/// ```
///
/// (SQLite's JSON functions may re-render the text; `records` and `dump` give the fields
/// byte for byte.)
///
/// **Whose file.** The sink marks each file it sets up with `PRAGMA application_id =
/// 1347897419` (`PWHK` in ASCII). Every connection it opens (the writer's, the checkpoint
/// thread's, a read's) refuses, before writing anything to it, a database that is neither
/// empty nor marked: another application's file is left as it was. A file with exactly this
/// layout's tables and no mark, from before files were marked, is taken and marked. A file the
/// sink cannot write (read-only, immutable, on a read-only mount), which SQLite would quietly
/// open read-only, is refused at open, and so is one in a directory where the WAL cannot be
/// created.
///
/// **Deciding what changed.** The sink keeps each identity's last hash in memory, as a pair
/// of 128-bit fingerprints (two SipHash digests under random keys; a collision, which would
/// take a changed record for an unchanged one, has a probability near 2⁻¹²⁸). That costs
/// 38 to 76 bytes of memory per identity (a 32-byte entry in a hash table kept between 7/16
/// and 7/8 full), and opening the file reads every row once to
/// build it. So a batch costs one row insert, whatever its size. Each write transaction first
/// takes in the rows other connections committed since, so two processes writing one file
/// still store each record once; a row deleted by hand is only forgotten when the file is next
/// opened (and its records are then stored again if they come back).
///
/// **Writing.** One writer thread owns the connection. It takes every batch waiting for it
/// and commits them in one `IMMEDIATE` transaction (group commit: one commit, and with
/// [`Durability::PowerLoss`] one fsync, for many batches), and answers each batch only once
/// that transaction is committed. A batch whose insert fails on its own (a constraint, a
/// trigger) is refused without touching the others; when the transaction itself fails (a full
/// disk, an I/O error), every batch in it is refused; after a full disk or a read-only file,
/// [`Sink::ready`] fails too until a batch is stored again. At most 256 batches wait for the writer;
/// the next one is refused at once. A caller waits at most
/// [`answer_timeout`](Self::answer_timeout) for the writer; that wait uses tokio's timer, so
/// use the sink on a runtime with its time driver enabled (as `#[tokio::main]` and every
/// server runtime have).
///
/// **Checkpoints.** Copying the WAL back into the file is mostly the work of a second thread
/// with a connection of its own: each time the WAL has grown by a MiB it runs a passive pass,
/// which copies alongside the commits. A pass racing the commits never copies the whole WAL,
/// though, and the WAL only starts again from its beginning once a checkpoint has; so once
/// the WAL (measured in pages, as SQLite reports it after each commit) reaches 16 MiB, the
/// writer, after answering its group, waits for the pass under way and runs one itself, which
/// copies the last frames and syncs the file. While no other connection reads an old snapshot
/// (a long query, say, which holds the WAL until it ends), the WAL then never holds more than
/// 16 MiB and one group, whether the batches are large or of one record (tests); a checkpoint
/// that could not complete is tried again a MiB later. SQLite's automatic checkpoint, which
/// runs inside the commit that crosses 4 MiB, held every waiting batch behind it: with it,
/// the report measured half the requests/s.
///
/// ```
/// use polytomic_webhook_store::{Durability, Identity, Sink, SqliteSink};
///
/// # tokio::runtime::Builder::new_multi_thread().enable_time().build().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("sqlite-sink-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let sink = SqliteSink::open(dir.join("records.db"), Identity::key_field("id"), Durability::Process)
///     .await
///     .unwrap();
/// sink.ready().await.unwrap();
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct SqliteSink {
    /// The writer thread's queue; the thread ends once every clone of the sink is gone.
    jobs: mpsc::SyncSender<Job>,
    /// Where [`Sink::record_stream`] reads, through a connection of its own.
    path: Arc<Path>,
    identity: Identity,
    answer_timeout: Duration,
}

/// Work for the writer thread.
enum Job {
    /// Store a batch, as part of the next group.
    Store {
        batch: SyncRecords,
        done: oneshot::Sender<Result<Stored, SinkError>>,
    },
    /// Anything else on the connection, between two groups (only tests need it now that
    /// reads have a connection of their own).
    #[cfg_attr(not(test), allow(dead_code))]
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
    /// The readiness check, between two groups: the file is readable and every row committed
    /// since the writer last looked can be taken in.
    Ready(oneshot::Sender<Result<(), SinkError>>),
}

impl std::fmt::Debug for SqliteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSink")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl SqliteSink {
    /// Opens (or creates) the database file at `path`, and reads what it holds.
    pub async fn open(
        path: impl AsRef<Path>,
        identity: Identity,
        durability: Durability,
    ) -> Result<Self, SinkError> {
        let failed =
            |error: &dyn std::fmt::Display| SinkError::from_cause("opening the SQLite file", error);
        let path: PathBuf = path.as_ref().to_owned();
        let read_path = Arc::from(path.as_path());
        let (jobs, queue) = mpsc::sync_channel(MAX_WAITING);
        let (opened, open_result) = oneshot::channel();
        let writer_identity = identity.clone();
        std::thread::Builder::new()
            .name("sqlite-sink".to_owned())
            .spawn(
                move || match Writer::open(&path, durability, writer_identity) {
                    Ok(writer) => {
                        let _ = opened.send(Ok(()));
                        writer.run(&queue);
                    }
                    Err(error) => {
                        let _ = opened.send(Err(failed(&error)));
                    }
                },
            )
            .map_err(|error| failed(&error))?;
        open_result.await.map_err(|error| failed(&error))??;
        Ok(Self {
            jobs,
            path: read_path,
            identity,
            answer_timeout: ANSWER_TIMEOUT,
        })
    }

    /// How long a delivery waits for its batch to be committed before the sink answers it with
    /// an error (so the delivery is answered 503); 10 seconds by default.
    #[must_use]
    pub fn answer_timeout(mut self, timeout: Duration) -> Self {
        self.answer_timeout = timeout;
        self
    }

    /// Sends `job` to the writer thread and waits for its answer on `answer`.
    async fn submit<T>(
        &self,
        what: &'static str,
        job: Job,
        answer: oneshot::Receiver<Result<T, SinkError>>,
    ) -> Result<T, SinkError> {
        // Either fails only when the writer thread is gone or panicked doing this job.
        let stopped = || SinkError::new(format_args!("{what}: the SQLite writer failed"));
        self.jobs.try_send(job).map_err(|error| match error {
            mpsc::TrySendError::Full(_) => SinkError::new(format_args!(
                "{what}: {MAX_WAITING} batches are already waiting for the SQLite writer"
            )),
            mpsc::TrySendError::Disconnected(_) => stopped(),
        })?;
        match tokio::time::timeout(self.answer_timeout, answer).await {
            Ok(answer) => answer.map_err(|_| stopped())?,
            Err(_) => Err(SinkError::new(format_args!(
                "{what}: the SQLite writer did not answer within {:?}",
                self.answer_timeout
            ))),
        }
    }

    /// Runs `work` on the connection, on the writer thread, between two groups.
    #[cfg_attr(not(test), allow(dead_code))]
    async fn run<T, W>(&self, what: &'static str, work: W) -> Result<T, SinkError>
    where
        T: Send + 'static,
        W: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job = Job::Run(Box::new(move |connection| {
            let result = work(connection).map_err(|error| SinkError::from_cause(what, error));
            let _ = done.send(result);
        }));
        self.submit(what, job, answer).await
    }
}

/// The writer thread's state: the connection and what the file holds.
struct Writer {
    connection: Connection,
    identity: Identity,
    known: Known,
    checkpoints: Checkpoints,
    /// The last group's failure, while it is one the next write will most likely meet too (a
    /// full disk, a read-only file): the sink is not ready until a write succeeds again.
    unwritable: Option<SinkError>,
}

/// The checkpoint thread, and what the writer shares with it.
struct Checkpoints {
    /// Holds at most one request: requests made while a pass runs fold into the next.
    requests: mpsc::SyncSender<()>,
    /// Held by the thread during a pass, and by the writer while it finishes a checkpoint.
    passes: Arc<Mutex<()>>,
    /// [`CHECKPOINT_STEP_BYTES`] and [`CHECKPOINT_BYTES`] in WAL pages.
    step_pages: i64,
    finish_pages: i64,
    /// The WAL's length, in pages, when the thread was last asked for a pass.
    asked_at: i64,
    /// The WAL's length past which the writer (next) finishes a checkpoint.
    finish_at: i64,
}

thread_local! {
    /// The pages in the WAL after the writer's last commit, as SQLite's WAL hook reports them
    /// on the writer's thread.
    static WAL_PAGES: Cell<i64> = const { Cell::new(0) };
}

/// The writer connection's WAL hook: notes the WAL's length after each commit.
#[allow(clippy::unnecessary_wraps)] // The hook's signature is rusqlite's.
fn note_wal_pages(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|count| count.set(i64::from(pages)));
    Ok(())
}

impl Checkpoints {
    /// Starts the checkpoint thread on a connection of its own to `path`, and has `writer`
    /// report its WAL's length; the thread ends when the writer does.
    fn start(path: &Path, writer: &Connection) -> rusqlite::Result<Self> {
        // After `wal_autocheckpoint`, which registers a hook of its own.
        writer.wal_hook(Some(note_wal_pages));
        let page_bytes: i64 = writer.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let pages = |bytes: usize| i64::try_from(bytes).unwrap_or(i64::MAX) / page_bytes.max(512);
        // The file the writer opened, unless it was replaced since: then not ours, or empty.
        let (connection, Layout::Marked) = file::open(path, Access::Write)? else {
            return Err(file::refused(
                "the file changed while the sink opened it".to_owned(),
            ));
        };
        // A checkpoint that copies the whole WAL syncs the file before it lets the WAL start
        // again only at this level or above; say so rather than rely on SQLite's default.
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        let (requests, received) = mpsc::sync_channel(1);
        let passes = Arc::new(Mutex::new(()));
        let running = Arc::clone(&passes);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                while received.recv().is_ok() {
                    let _running = running.lock().unwrap_or_else(PoisonError::into_inner);
                    // A pass copies what no reader still needs, and never waits for the
                    // writer. Failures (a full disk) leave the WAL longer; commits report them.
                    let _ = checkpoint(&connection);
                }
            })
            .map_err(|error| {
                rusqlite::Error::InvalidParameterName(format!("starting a thread: {error}"))
            })?;
        Ok(Self {
            requests,
            passes,
            step_pages: pages(CHECKPOINT_STEP_BYTES),
            finish_pages: pages(CHECKPOINT_BYTES),
            asked_at: 0,
            finish_at: pages(CHECKPOINT_BYTES),
        })
    }

    /// After a commit: asks the thread for a pass each [`CHECKPOINT_STEP_BYTES`] of WAL.
    fn committed(&mut self) {
        let pages = WAL_PAGES.with(Cell::get);
        if pages < self.asked_at {
            // The WAL started again from its beginning.
            self.asked_at = 0;
        }
        if pages >= self.asked_at + self.step_pages {
            self.asked_at = pages;
            // Full: a pass is already asked for, and it will take these frames too.
            let _ = self.requests.try_send(());
        }
    }

    /// Once the WAL is past [`CHECKPOINT_BYTES`], finishes a checkpoint on the writer's
    /// `connection`, between two groups (their batches already answered): once the thread's
    /// pass is over, with no commit under way, this copies what the passes left and completes,
    /// so that the next transaction starts the WAL again from its beginning. When it cannot
    /// complete (another connection reads an old snapshot), it is tried again a step later.
    fn finish_if_due(&mut self, connection: &Connection) {
        let pages = WAL_PAGES.with(Cell::get);
        if pages < self.finish_at {
            return;
        }
        let _running = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
        self.finish_at = match checkpoint(connection) {
            Ok(Checkpoint {
                busy: false,
                frames,
                copied,
            }) if copied == frames => self.finish_pages,
            _ => pages + self.step_pages,
        };
    }
}

/// What a checkpoint did.
struct Checkpoint {
    /// Another connection held the checkpoint or the write lock: nothing was done.
    busy: bool,
    /// The WAL's length, in frames.
    frames: i64,
    /// How many of them are copied into the file.
    copied: i64,
}

/// A passive checkpoint: copies what no reader still needs, and never waits for a writer.
fn checkpoint(connection: &Connection) -> rusqlite::Result<Checkpoint> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Checkpoint {
            busy: row.get::<_, i64>(0)? != 0,
            frames: row.get(1)?,
            copied: row.get(2)?,
        })
    })
}

/// A batch waiting for its group's commit, and where its answer goes.
type Waiting = (SyncRecords, oneshot::Sender<Result<Stored, SinkError>>);

impl Writer {
    fn open(path: &Path, durability: Durability, identity: Identity) -> rusqlite::Result<Self> {
        // Before anything is written: a file the sink cannot write, or another application's,
        // is refused as it is.
        let (connection, layout) = file::open(path, Access::Write)?;
        // journal_mode answers with the mode now in force; anything but "wal" is refused,
        // since the durability described above is WAL's.
        let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, not wal"
            )));
        }
        connection.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Process => "NORMAL",
                Durability::PowerLoss => "FULL",
            },
        )?;
        if layout != Layout::Marked {
            // One transaction: no file is left with the tables but without the mark.
            connection.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; COMMIT;"
            ))?;
        }
        // Checkpoints are the checkpoint thread's (see `Checkpoints`).
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        let mut known = Known::new();
        catch_up(&connection, &mut known)?;
        Ok(Self {
            checkpoints: Checkpoints::start(path, &connection)?,
            connection,
            identity,
            known,
            unwritable: None,
        })
    }

    /// Takes the batches waiting (at most [`MAX_GROUP`]) and commits them as one group, until
    /// every sender is gone.
    fn run(mut self, queue: &mpsc::Receiver<Job>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Ok(first) = queue.recv() {
            let mut next = Some(first);
            let mut records = 0;
            while let Some(job) = next {
                match job {
                    Job::Store { batch, done } => {
                        records += batch.len();
                        group.push((batch, done));
                    }
                    Job::Ready(done) => {
                        self.commit_group(&mut group);
                        records = 0;
                        // A row this sink cannot read, written by another connection, would
                        // refuse every batch from now on: that makes the sink not ready.
                        let ready = self
                            .catch_up_guarded()
                            .and_then(|()| match &self.unwritable {
                                Some(error) => Err(format!("the last write failed: {error}")),
                                None => Ok(()),
                            })
                            .map_err(|error| {
                                SinkError::from_cause("checking the SQLite file", error)
                            });
                        let _ = done.send(ready);
                    }
                    Job::Run(work) => {
                        // What was asked before it sees the batches stored before it.
                        self.commit_group(&mut group);
                        records = 0;
                        // A panic drops `work`'s answer channel, which its caller reads as an
                        // error; the writer carries on for everyone else.
                        let _ = catch_unwind(AssertUnwindSafe(|| work(&mut self.connection)));
                    }
                }
                next = if group.len() < MAX_GROUP && records < MAX_GROUP_RECORDS {
                    queue.try_recv().ok()
                } else {
                    None
                };
            }
            self.commit_group(&mut group);
        }
    }

    /// [`catch_up`] outside a write transaction, where no `catch_unwind` of a group's guards
    /// it: a panic in it resets `known` (the next group reads the file again) and is an error.
    fn catch_up_guarded(&mut self) -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| {
            catch_up(&self.connection, &mut self.known)
        })) {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => {
                self.known = Known::new();
                Err("the writer panicked reading the file".to_owned())
            }
        }
    }

    /// Stores the batches of `group` in one transaction and answers each of them.
    fn commit_group(&mut self, group: &mut Vec<Waiting>) {
        if group.is_empty() {
            return;
        }
        let mut undo = Undo::new();
        // A panic unwinds the transaction (its drop rolls back): every batch of the group is
        // refused, nothing of it kept, and the writer goes on with the next group.
        let stored = catch_unwind(AssertUnwindSafe(|| {
            self.store_group(group.iter().map(|(batch, _)| batch), &mut undo)
        }));
        let results = match stored {
            Ok(Ok(results)) => {
                if results
                    .iter()
                    .any(|result| matches!(result, Ok(s) if s.stored > 0))
                {
                    self.unwritable = None;
                }
                results
            }
            Ok(Err(error)) => {
                if file::is_lasting(&error) {
                    self.unwritable = Some(store_failed(&error));
                }
                self.known.undo(&mut undo, 0);
                vec![Err(store_failed(&error)); group.len()]
            }
            Err(_) => {
                // What the panic left in `known` is unsure: read it all again from the file,
                // here, outside any write transaction (a failure leaves the rest to the next
                // group's catch-up).
                self.known = Known::new();
                let _ = self.catch_up_guarded();
                vec![
                    Err(SinkError::new(
                        "storing a batch in SQLite: the writer panicked"
                    ));
                    group.len()
                ]
            }
        };
        for ((_, done), result) in group.drain(..).zip(results) {
            // The delivery may have given up waiting; its batch is stored all the same.
            let _ = done.send(result);
        }
        self.checkpoints.finish_if_due(&self.connection);
    }

    /// One transaction for all of `batches`, a row for each that stores anything: each
    /// batch's own result, or `Err` when the transaction failed as a whole and nothing of any
    /// batch was kept (the changes to undo then are in `undo`).
    fn store_group<'b>(
        &mut self,
        batches: impl ExactSizeIterator<Item = &'b SyncRecords>,
        undo: &mut Undo,
    ) -> rusqlite::Result<Vec<Result<Stored, SinkError>>> {
        let Self {
            connection,
            identity,
            known,
            checkpoints,
            ..
        } = self;
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The write lock is held from here on: nobody else adds a row until the commit.
        catch_up(&transaction, known)?;
        let mut results = Vec::with_capacity(batches.len());
        let mut seq = known.seq();
        for batch in batches {
            let mark = undo.len();
            let (changed, superseded) = known.change(identity, batch, undo);
            // A bug between deciding and storing, for the test of what a panic leaves.
            #[cfg(test)]
            assert!(
                !batch.iter().any(|record| record.hash().as_str() == "panic"),
                "a bug while storing"
            );
            let stored = Stored {
                stored: changed.len(),
                unchanged: batch.len() - superseded - changed.len(),
                superseded,
            };
            if changed.is_empty() {
                results.push(Ok(stored));
                continue;
            }
            let records = row::encode(&changed);
            // One statement: when it fails, SQLite undoes it alone (and the batch with it).
            let inserted = transaction
                .prepare_cached(
                    "INSERT INTO batches (sync_id, sync_name, records) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![batch.id().as_str(), batch.name(), records]);
            match inserted {
                Ok(_) => {
                    seq = transaction.last_insert_rowid();
                    results.push(Ok(stored));
                }
                // SQLite rolled the whole transaction back (an I/O error): the batches before
                // this one went with it. A full disk or a read-only file would refuse the next
                // batch too: the group goes as a whole.
                Err(error) if transaction.is_autocommit() || file::is_lasting(&error) => {
                    return Err(error);
                }
                Err(error) => {
                    known.undo(undo, mark);
                    results.push(Err(store_failed(&error)));
                }
            }
        }
        transaction.commit()?;
        known.committed(seq);
        checkpoints.committed();
        Ok(results)
    }
}

/// Takes into `known` the rows committed after the last one it has seen.
fn catch_up(connection: &Connection, known: &mut Known) -> rusqlite::Result<()> {
    let mut select = connection
        .prepare_cached("SELECT seq, sync_id, records FROM batches WHERE seq > ?1 ORDER BY seq")?;
    let mut rows = select.query([known.seq()])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let sync = row.get_ref(1)?.as_str()?;
        for record in decode_records(row, 2)? {
            known.learn(seq, sync, record.key(), record.hash());
        }
    }
    Ok(())
}

/// The records of column `column` of `row`.
fn decode_records<'r>(
    row: &'r rusqlite::Row<'_>,
    column: usize,
) -> rusqlite::Result<Vec<row::RowRecord<'r>>> {
    let text = row.get_ref(column)?.as_str()?;
    row::decode(text).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            Box::new(error),
        )
    })
}

fn store_failed(error: &rusqlite::Error) -> SinkError {
    SinkError::from_cause("storing a batch in SQLite", error)
}

impl Sink for SqliteSink {
    fn store<'a>(&'a self, batch: &'a SyncRecords) -> SinkFuture<'a, Stored> {
        // The batch's fields share the delivery's buffer: the clone costs a handle per record.
        let (done, answer) = oneshot::channel();
        let job = Job::Store {
            batch: batch.clone(),
            done,
        };
        Box::pin(self.submit("storing a batch in SQLite", job, answer))
    }

    fn ready(&self) -> SinkFuture<'_, ()> {
        // Reads the rows committed since the writer last looked (none, usually: one index
        // lookup), so the file, its schema and every new row must be readable.
        let (done, answer) = oneshot::channel();
        Box::pin(self.submit("checking the SQLite file", Job::Ready(done), answer))
    }

    fn records(&self) -> SinkFuture<'_, Vec<StoredRecord>> {
        Box::pin(self.record_stream().collect())
    }

    fn record_stream(&self) -> RecordStream<'_> {
        // A connection of its own, so a long read never holds the writer up.
        record_stream(&self.path)
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use super::*;
    use crate::testing::{batch, check_sink, fresh_sync_id};
    use polytomic_webhook_event::SyncId;

    pub(super) fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "polytomic-webhook-store-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A sink on a new file in a scratch directory of its own, identifying records by hash.
    async fn fresh_sink(name: &str) -> (SqliteSink, PathBuf) {
        let path = scratch(name).join("records.db");
        let sink = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap();
        (sink, path)
    }

    /// The hash of every stored record, in store order.
    async fn stored_hashes(sink: &SqliteSink) -> Vec<String> {
        let records = sink.records().await.unwrap();
        records.into_iter().map(|record| record.hash).collect()
    }

    /// Makes storing a batch with a record whose hash is `boom` fail (`refused`): with `ABORT`
    /// that batch's insert alone, with `ROLLBACK` the whole transaction (as a full disk or an
    /// I/O error does).
    fn refuse_boom(path: &Path, action: &str) {
        Connection::open(path)
            .unwrap()
            .execute_batch(&format!(
                "CREATE TRIGGER boom BEFORE INSERT ON batches
                 WHEN NEW.records LIKE '%,\"boom\",%'
                 BEGIN SELECT RAISE({action}, 'refused'); END;"
            ))
            .unwrap();
    }

    /// Holds the writer until `release` is dropped or sent to, so batches sent meanwhile are
    /// taken as one group.
    fn hold_writer(sink: &SqliteSink) -> mpsc::Sender<()> {
        let (release, held) = mpsc::channel::<()>();
        sink.jobs
            .send(Job::Run(Box::new(move |_| {
                let _ = held.recv();
            })))
            .unwrap();
        release
    }

    /// Sends `batches` straight to the writer queue and returns their answers, in order.
    async fn store_as_group(
        sink: &SqliteSink,
        batches: Vec<SyncRecords>,
    ) -> Vec<Result<Stored, SinkError>> {
        let release = hold_writer(sink);
        let answers: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let (done, answer) = oneshot::channel();
                sink.jobs.send(Job::Store { batch, done }).unwrap();
                answer
            })
            .collect();
        release.send(()).unwrap();
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.unwrap());
        }
        results
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_sink_passes_the_shared_suite() {
        let dir = scratch("suite");
        let mut opened = 0;
        check_sink(|identity| {
            opened += 1;
            let path = dir.join(format!("{opened}.db"));
            async move {
                SqliteSink::open(path, identity, Durability::Process)
                    .await
                    .unwrap()
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_that_fails_halfway_leaves_nothing_behind() {
        let path = scratch("atomic").join("records.db");
        let sink = SqliteSink::open(&path, Identity::hash(), Durability::PowerLoss)
            .await
            .unwrap();
        // The second record's insert fails after the first one's went through.
        refuse_boom(&path, "ABORT");
        let sync = fresh_sync_id();
        let doomed = batch(&sync, &[("ok", r#"{"n":1}"#), ("boom", r#"{"n":2}"#)]);
        let error = sink.store(&doomed).await.unwrap_err();
        assert!(error.to_string().contains("refused"), "{error}");
        assert!(
            !error.to_string().contains(r#""n""#),
            "no record value: {error}"
        );
        assert!(sink.records().await.unwrap().is_empty());
        // Neither the record nor its identity's last hash was kept: it is stored when retried.
        let retried = batch(&sync, &[("ok", r#"{"n":1}"#)]);
        assert_eq!(sink.store(&retried).await.unwrap().stored, 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_file_is_wal_and_durability_picks_the_synchronous_setting() {
        let dir = scratch("pragmas");
        for (durability, expected) in [(Durability::Process, 1), (Durability::PowerLoss, 2)] {
            let path = dir.join(format!("{durability:?}.db"));
            let sink = SqliteSink::open(&path, Identity::hash(), durability)
                .await
                .unwrap();
            let pragma = |name: &'static str| {
                sink.run("reading a pragma", move |connection| {
                    connection
                        .query_row(&format!("PRAGMA {name}"), [], |row| {
                            row.get::<_, rusqlite::types::Value>(0)
                        })
                        .map(|value| format!("{value:?}"))
                })
            };
            assert_eq!(pragma("journal_mode").await.unwrap(), r#"Text("wal")"#);
            // 1 is NORMAL, 2 is FULL.
            assert_eq!(
                pragma("synchronous").await.unwrap(),
                format!("Integer({expected})")
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_that_fails_inside_a_group_fails_alone() {
        let (sink, path) = fresh_sink("group").await;
        refuse_boom(&path, "ABORT");
        let sync = fresh_sync_id();
        let batches = vec![
            batch(&sync, &[("before", r#"{"n":1}"#)]),
            batch(&sync, &[("ok", r#"{"n":2}"#), ("boom", r#"{"n":3}"#)]),
            batch(&sync, &[("after", r#"{"n":4}"#)]),
        ];
        let results = store_as_group(&sink, batches).await;
        assert_eq!(results[0].as_ref().unwrap().stored, 1);
        assert!(
            results[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("refused")
        );
        assert_eq!(results[2].as_ref().unwrap().stored, 1);
        assert_eq!(stored_hashes(&sink).await, ["before", "after"]);
        // The refused batch's first record left no last hash behind: a retry stores it.
        let retried = batch(&sync, &[("ok", r#"{"n":2}"#)]);
        assert_eq!(sink.store(&retried).await.unwrap().stored, 1);
    }

    /// An error that makes SQLite abandon the whole transaction refuses every batch of the
    /// group and keeps nothing of them; each is stored when sent again.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failure_of_the_whole_transaction_refuses_the_group_and_keeps_nothing() {
        let (sink, path) = fresh_sink("rollback").await;
        refuse_boom(&path, "ROLLBACK");
        let sync = fresh_sync_id();
        let before = batch(&sync, &[("before", r#"{"n":1}"#)]);
        let after = batch(&sync, &[("after", r#"{"n":4}"#)]);
        let batches = vec![
            before.clone(),
            batch(&sync, &[("boom", r#"{"n":3}"#)]),
            after.clone(),
        ];
        let results = store_as_group(&sink, batches).await;
        assert!(results.iter().all(Result::is_err), "{results:?}");
        assert!(sink.records().await.unwrap().is_empty());
        assert_eq!(sink.store(&before).await.unwrap().stored, 1);
        assert_eq!(sink.store(&after).await.unwrap().stored, 1);
    }

    /// A writer that does not answer in time costs the delivery a 503, never a hang; the batch
    /// it was waiting for is committed once the writer is free, so a retry finds it unchanged.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_stalled_writer_is_an_error_after_the_answer_timeout_and_the_retry_is_unchanged() {
        let (sink, _) = fresh_sink("stalled").await;
        let sink = sink.answer_timeout(Duration::from_millis(200));
        let release = hold_writer(&sink);
        let one = batch(&fresh_sync_id(), &[("h", r#"{"n":1}"#)]);
        let error = sink.store(&one).await.unwrap_err();
        assert!(error.to_string().contains("did not answer"), "{error}");
        release.send(()).unwrap();
        // Patient again, so a loaded machine cannot fail the retry.
        let sink = sink.answer_timeout(Duration::from_secs(60));
        let retried = sink.store(&one).await.unwrap();
        assert_eq!((retried.stored, retried.unchanged), (0, 1));
    }

    /// With the writer stalled, the queue fills up to its bound and the next delivery is
    /// refused at once; the queued batches are stored once the writer moves again.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_queue_refuses_at_once_and_the_queued_batches_are_stored() {
        let (sink, _) = fresh_sink("full").await;
        let sink = sink.answer_timeout(Duration::from_secs(60));
        let release = hold_writer(&sink);
        let sync = fresh_sync_id();
        // The held job may or may not have left the queue yet: fill it up to the brim.
        let mut queued = Vec::new();
        let refused = loop {
            let one = batch(&sync, &[(&format!("h{}", queued.len()), "{}")]);
            let (done, answer) = oneshot::channel();
            match sink.jobs.try_send(Job::Store {
                batch: one.clone(),
                done,
            }) {
                Ok(()) => queued.push(answer),
                Err(_) => break one,
            }
            assert!(
                queued.len() <= MAX_WAITING,
                "the queue took more than its bound"
            );
        };
        assert!(queued.len() >= MAX_WAITING - 1, "{}", queued.len());
        let error = sink.store(&refused).await.unwrap_err();
        assert!(error.to_string().contains("already waiting"), "{error}");
        release.send(()).unwrap();
        for answer in queued {
            assert_eq!(answer.await.unwrap().unwrap().stored, 1);
        }
        assert_eq!(sink.store(&refused).await.unwrap().stored, 1);
    }

    /// A panic on the writer thread fails only the work that panicked: the sink keeps storing.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_writer_survives_a_panic() {
        let (sink, _) = fresh_sink("panic").await;
        let panicked = sink
            .run::<(), _>("panicking", |_| panic!("a bug in the writer"))
            .await
            .unwrap_err();
        assert!(panicked.to_string().contains("writer failed"), "{panicked}");
        let one = batch(&fresh_sync_id(), &[("h", r#"{"n":1}"#)]);
        assert_eq!(sink.store(&one).await.unwrap().stored, 1);
    }

    /// 64 MiB of batches, stored by 8 deliveries at a time so that commits never pause,
    /// pass through a WAL that starts again from its beginning at 16 MiB: it never holds
    /// more than that and a group (of 8 MiB here), nor does the file stay empty.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_steady_load_keeps_the_wal_bounded() {
        let (sink, path) = fresh_sink("wal").await;
        let wal = path.with_extension("db-wal");
        let mut largest_wal = 0;
        store_large(&sink, &fresh_sync_id(), 0, 64, &mut || {
            largest_wal = largest_wal.max(std::fs::metadata(&wal).unwrap().len());
        })
        .await;
        let file = std::fs::metadata(&path).unwrap().len();
        assert!(
            largest_wal < 32 << 20,
            "the WAL reached {largest_wal} bytes"
        );
        assert!(file > 16 << 20, "the file holds {file} bytes");
    }

    /// Stores `count` batches of 100 records of 10 KB (about 1 MiB each), 8 at a time so that
    /// commits never pause, calling `stored` after each.
    async fn store_large(
        sink: &SqliteSink,
        sync: &SyncId,
        first: usize,
        count: usize,
        stored: &mut dyn FnMut(),
    ) {
        let fields = format!(r#"{{"text":"{}"}}"#, "x".repeat(10_000));
        let batches: Vec<SyncRecords> = (first..first + count)
            .map(|round| {
                let hashes: Vec<String> = (0..100).map(|n| format!("{round}-{n}")).collect();
                let records: Vec<(&str, &str)> = hashes
                    .iter()
                    .map(|hash| (hash.as_str(), fields.as_str()))
                    .collect();
                batch(sync, &records)
            })
            .collect();
        for eight in batches.chunks(8) {
            let stores: Vec<_> = eight
                .iter()
                .map(|batch| {
                    let (sink, batch) = (sink.clone(), batch.clone());
                    tokio::spawn(async move { sink.store(&batch).await })
                })
                .collect();
            for store in stores {
                assert_eq!(store.await.unwrap().unwrap().stored, 100);
                stored();
            }
        }
    }

    /// A reader holding an old snapshot keeps the checkpoint from completing past 16 MiB; once
    /// it is gone, the writer tries again (a MiB later) and the WAL starts again from its
    /// beginning, so it grows by no more than a MiB and a group.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_checkpoint_held_off_by_a_reader_is_finished_once_the_reader_is_gone() {
        let (sink, path) = fresh_sink("wal-reader").await;
        let sync = fresh_sync_id();
        let wal = path.with_extension("db-wal");
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM batches", [], |row| row.get(0))
            .unwrap();
        store_large(&sink, &sync, 0, 24, &mut || ()).await;
        reader.execute_batch("COMMIT").unwrap();
        let held = std::fs::metadata(&wal).unwrap().len();
        assert!(
            held > 20 << 20,
            "the reader did not hold the WAL: {held} bytes"
        );
        // 24 MiB more: without the retry the WAL would take them all; with it, at most the
        // MiB before the retry and the group of 8 MiB under way.
        store_large(&sink, &sync, 24, 24, &mut || ()).await;
        let after = std::fs::metadata(&wal).unwrap().len();
        assert!(
            after < held + (12 << 20),
            "the WAL grew from {held} to {after} bytes after the reader left"
        );
    }

    /// Small batches write whole pages to the WAL for little row text: the bound is on the
    /// WAL's own length, so 10,000 one-record batches leave it no longer than large ones do.
    #[tokio::test(flavor = "multi_thread")]
    async fn many_small_batches_keep_the_wal_bounded() {
        let (sink, path) = fresh_sink("wal-small").await;
        let sync = fresh_sync_id();
        let wal = path.with_extension("db-wal");
        let mut largest_wal = 0;
        for n in 0..10_000 {
            let one = batch(&sync, &[(&format!("h{n}"), r#"{"n":1}"#)]);
            assert_eq!(sink.store(&one).await.unwrap().stored, 1);
            if n % 100 == 0 {
                largest_wal = largest_wal.max(std::fs::metadata(&wal).unwrap().len());
            }
        }
        largest_wal = largest_wal.max(std::fs::metadata(&wal).unwrap().len());
        assert!(
            largest_wal < 24 << 20,
            "the WAL reached {largest_wal} bytes"
        );
    }

    /// Two processes writing one file: each takes in the other's rows before it decides.
    #[tokio::test(flavor = "multi_thread")]
    async fn two_sinks_on_one_file_store_each_record_once() {
        let path = scratch("two").join("records.db");
        let open = || SqliteSink::open(&path, Identity::key_field("id"), Durability::Process);
        let (one, two) = (open().await.unwrap(), open().await.unwrap());
        let sync = fresh_sync_id();
        let first = batch(&sync, &[("a", r#"{"id":1}"#), ("b", r#"{"id":2}"#)]);
        let changed = batch(&sync, &[("a2", r#"{"id":1}"#)]);
        assert_eq!(one.store(&first).await.unwrap().stored, 2);
        assert_eq!(two.store(&first).await.unwrap().unchanged, 2);
        assert_eq!(two.store(&changed).await.unwrap().stored, 1);
        assert_eq!(one.store(&changed).await.unwrap().unchanged, 1);
        // And back: the change `two` stored is the last hash `one` compares with.
        assert_eq!(one.store(&first).await.unwrap().stored, 1);
        assert_eq!(stored_hashes(&two).await, ["a", "b", "a2", "a"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_of_the_earlier_layout_is_refused_with_a_clear_error() {
        let path = scratch("earlier").join("records.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE identities (sync_id TEXT, identity TEXT, hash TEXT);
                 CREATE TABLE records (seq INTEGER PRIMARY KEY, fields TEXT);",
            )
            .unwrap();
        let error = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("earlier version"), "{error}");
    }

    /// A row that is not what this sink writes is an error when the file is opened, not a
    /// record silently forgotten.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_row_fails_opening_the_file() {
        let path = scratch("damaged").join("records.db");
        drop(
            SqliteSink::open(&path, Identity::hash(), Durability::Process)
                .await
                .unwrap(),
        );
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "INSERT INTO batches (sync_id, sync_name, records) VALUES ('s', 'n', '[[');",
            )
            .unwrap();
        let error = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("opening the SQLite file"),
            "{error}"
        );
    }

    /// What `dump` reads through its own read-only connection is what the sink holds, while
    /// the sink is open and writing.
    #[tokio::test(flavor = "multi_thread")]
    async fn record_stream_gives_what_the_sink_holds() {
        let path = scratch("read").join("records.db");
        let sink = SqliteSink::open(&path, Identity::key_field("id"), Durability::Process)
            .await
            .unwrap();
        let sync = fresh_sync_id();
        let stored = batch(&sync, &[("a", r#"{"id":1}"#), ("b", r#"{ "id" : 2.50 }"#)]);
        assert_eq!(sink.store(&stored).await.unwrap().stored, 2);
        let read = record_stream(&path).collect().await.unwrap();
        assert_eq!(read, sink.records().await.unwrap());
        assert_eq!(read[1].key.as_deref(), Some("2.50"));
        assert_eq!(read[1].fields, r#"{ "id" : 2.50 }"#);
        // And once the sink is closed, its WAL folded into the file and removed.
        drop(sink);
        let wal = path.with_extension("db-wal");
        for _ in 0..100 {
            if !wal.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!wal.exists(), "the WAL outlived the sink");
        assert_eq!(record_stream(&path).collect().await.unwrap(), read);
        // A file no sink wrote to holds no records; one of the earlier layout is refused.
        let empty = path.with_extension("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(record_stream(&empty).collect().await.unwrap().is_empty());
        let earlier = path.with_extension("earlier");
        Connection::open(&earlier)
            .unwrap()
            .execute_batch("CREATE TABLE identities (x); CREATE TABLE records (y);")
            .unwrap();
        let error = record_stream(&earlier).collect().await.unwrap_err();
        assert!(error.to_string().contains("earlier version"), "{error}");
        let missing = record_stream(&path.with_extension("missing"))
            .collect()
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("reading records"), "{missing}");
    }

    /// A row the sink cannot read, added by another connection after the sink opened the
    /// file, fails the batches after it and makes the sink not ready, so a health check says
    /// so instead of the deliveries alone.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_row_written_later_makes_the_sink_not_ready() {
        let (sink, path) = fresh_sink("damaged-later").await;
        sink.ready().await.unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "INSERT INTO batches (sync_id, sync_name, records) VALUES ('s', 'n', '[[');",
            )
            .unwrap();
        let one = batch(&fresh_sync_id(), &[("h", r#"{"n":1}"#)]);
        assert!(sink.store(&one).await.is_err());
        let error = sink.ready().await.unwrap_err();
        assert!(
            error.to_string().contains("checking the SQLite file"),
            "{error}"
        );
    }

    /// A panic while a group is stored refuses the whole group and leaves none of its changes
    /// in memory: what the file holds is read again.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_panic_while_storing_refuses_the_group_and_forgets_its_changes() {
        let (sink, _) = fresh_sink("panic-store").await;
        let sync = fresh_sync_id();
        let before = batch(&sync, &[("a", r#"{"n":1}"#)]);
        assert_eq!(sink.store(&before).await.unwrap().stored, 1);
        let kept_out = batch(&sync, &[("b", r#"{"n":2}"#)]);
        let results = store_as_group(
            &sink,
            vec![kept_out.clone(), batch(&sync, &[("panic", "{}")])],
        )
        .await;
        for result in &results {
            let error = result.as_ref().unwrap_err();
            assert!(error.to_string().contains("panicked"), "{error}");
        }
        assert_eq!(sink.store(&kept_out).await.unwrap().stored, 1);
        assert_eq!(sink.store(&before).await.unwrap().unchanged, 1);
        assert_eq!(stored_hashes(&sink).await, ["a", "b"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_state_survives_reopening_the_file() {
        let path = scratch("reopen").join("records.db");
        let sync = fresh_sync_id();
        let one = batch(&sync, &[("h", r#"{"n":1}"#)]);
        let sink = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap();
        assert_eq!(sink.store(&one).await.unwrap().stored, 1);
        drop(sink);
        let sink = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap();
        assert_eq!(sink.store(&one).await.unwrap().unchanged, 1);
        assert_eq!(sink.records().await.unwrap().len(), 1);
        // A key's record changing A → B → A across reopenings is stored each time.
        let keyed = |hash| batch(&sync, &[(hash, r#"{"id":7}"#)]);
        for hash in ["A", "B", "A"] {
            let sink = SqliteSink::open(&path, Identity::key_field("id"), Durability::Process)
                .await
                .unwrap();
            assert_eq!(sink.store(&keyed(hash)).await.unwrap().stored, 1, "{hash}");
            assert_eq!(
                sink.store(&keyed(hash)).await.unwrap().unchanged,
                1,
                "{hash}"
            );
        }
    }

    /// The bytes of `path`, and whether SQLite's -wal and -shm files are beside it.
    pub(super) fn file_state(path: &Path) -> (Vec<u8>, bool) {
        let beside = ["db-wal", "db-shm"]
            .iter()
            .any(|extension| path.with_extension(extension).exists());
        (std::fs::read(path).unwrap(), beside)
    }

    /// Makes `path` unwritable until dropped, even for root, whom permissions do not stop (CI
    /// runs as root): with `chattr +i`, or else with permissions; never silently writable.
    struct WriteProtected(PathBuf);

    impl WriteProtected {
        fn new(path: &Path) -> Self {
            let immutable = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|status| status.success());
            if !immutable {
                let mut permissions = std::fs::metadata(path).unwrap().permissions();
                permissions.set_readonly(true);
                std::fs::set_permissions(path, permissions).unwrap();
            }
            let protected = Self(path.to_owned());
            let writable = if path.is_dir() {
                std::fs::write(path.join("probe"), b"").is_ok()
            } else {
                std::fs::OpenOptions::new().append(true).open(path).is_ok()
            };
            assert!(
                !writable,
                "neither `chattr +i` nor permissions make {} unwritable here",
                path.display()
            );
            protected
        }
    }

    impl Drop for WriteProtected {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
            if let Ok(metadata) = std::fs::metadata(&self.0) {
                let mut permissions = metadata.permissions();
                #[allow(clippy::permissions_set_readonly_false)] // Undoes `new`, in a scratch dir.
                permissions.set_readonly(false);
                let _ = std::fs::set_permissions(&self.0, permissions);
            }
        }
    }

    /// A file of this sink's, closed (its WAL folded in and removed), in a scratch directory.
    pub(super) async fn closed_sink_file(name: &str) -> PathBuf {
        let (sink, path) = fresh_sink(name).await;
        let one = batch(&fresh_sync_id(), &[("h", r#"{"n":1}"#)]);
        assert_eq!(sink.store(&one).await.unwrap().stored, 1);
        drop(sink);
        for _ in 0..100 {
            if !file_state(&path).1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!file_state(&path).1, "the sink left its WAL behind");
        path
    }

    /// Another application's database is refused by the writer, by `dump`'s read-only
    /// connection and by the checkpoint thread's, and none of them changes a byte of it or
    /// starts a WAL beside it.
    #[tokio::test(flavor = "multi_thread")]
    async fn another_applications_file_is_refused_and_left_as_it_was() {
        let path = scratch("foreign").join("app.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);")
            .unwrap();
        let before = file_state(&path);
        let error = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("another application"), "{error}");
        let error = record_stream(&path).collect().await.unwrap_err();
        assert!(error.to_string().contains("another application"), "{error}");
        let error = file::open(&path, Access::Write).unwrap_err();
        assert!(error.to_string().contains("another application"), "{error}");
        assert_eq!(file_state(&path), before);
        assert!(!before.1);
    }

    /// A file of today's layout from before files were marked is recognised by its tables,
    /// read as it is by `dump`, and marked by the writer; a new file is marked at once.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_of_this_layout_without_the_mark_is_kept_and_marked() {
        let dir = scratch("unmarked");
        let application_id = |path: &Path| -> i32 {
            Connection::open(path)
                .unwrap()
                .query_row("PRAGMA application_id", [], |row| row.get(0))
                .unwrap()
        };
        let new = closed_sink_file("unmarked-new").await;
        assert_eq!(application_id(&new), APPLICATION_ID);
        let path = dir.join("records.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "{SCHEMA} INSERT INTO batches (sync_id, sync_name, records)
                 VALUES ('s', 'n', '[[null,\"old\",{{}}]]');"
            ))
            .unwrap();
        let read = record_stream(&path).collect().await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(application_id(&path), 0, "dump marked the file");
        let sink = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap();
        assert_eq!(sink.records().await.unwrap(), read);
        assert_eq!(application_id(&path), APPLICATION_ID);
    }

    /// A file the sink cannot write is refused at open, untouched, rather than opened
    /// read-only without a word; so is one in a directory where its WAL cannot be created.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_that_cannot_be_written_is_refused_at_open_and_left_as_it_was() {
        let path = closed_sink_file("read-only").await;
        let before = file_state(&path);
        {
            let _protected = WriteProtected::new(&path);
            let error = SqliteSink::open(&path, Identity::hash(), Durability::Process)
                .await
                .unwrap_err();
            assert!(error.to_string().contains("is read-only"), "{error}");
        }
        assert_eq!(file_state(&path), before);
        let _protected = WriteProtected::new(path.parent().unwrap());
        let error = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("writable?"), "{error}");
        assert_eq!(file_state(&path), before);
    }

    /// A full disk (SQLite's page limit, here) refuses the batches and makes the sink not
    /// ready; the first batch stored once there is room makes it ready again.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_disk_makes_the_sink_not_ready_until_a_write_succeeds() {
        let (sink, _) = fresh_sink("full-disk").await;
        let limit = |pages: Option<i64>| {
            sink.run("limiting the file", move |connection| {
                let pages = match pages {
                    Some(pages) => pages,
                    None => connection.query_row("PRAGMA page_count", [], |row| row.get(0))?,
                };
                connection.pragma_update(None, "max_page_count", pages)
            })
        };
        limit(None).await.unwrap();
        let sync = fresh_sync_id();
        let large = format!(r#"{{"text":"{}"}}"#, "x".repeat(20_000));
        let refused = batch(&sync, &[("big", &large)]);
        let error = sink.store(&refused).await.unwrap_err();
        assert!(error.to_string().contains("full"), "{error}");
        let error = sink.ready().await.unwrap_err();
        assert!(error.to_string().contains("full"), "{error}");
        limit(Some(1 << 30)).await.unwrap();
        assert!(
            sink.ready().await.is_err(),
            "ready before any write succeeded"
        );
        assert_eq!(sink.store(&refused).await.unwrap().stored, 1);
        sink.ready().await.unwrap();
    }
}
