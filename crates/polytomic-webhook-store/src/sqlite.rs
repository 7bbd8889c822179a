//! [`SqliteSink`]: one SQLite file, for a receiver on one machine.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use polytomic_webhook_event::SyncRecords;
use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::{Durability, Identity, Sink, SinkError, SinkFuture, Stored, StoredRecord};

/// How long a write waits for another connection (a `dump` reading, say) to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page cache of the writer's connection, in KiB (SQLite's default is 2 MiB): the
/// identities' index pages stay in memory between transactions.
const CACHE_KIB: u32 = 16 * 1024;

/// The most batches committed in one transaction: bounds how long the first of them waits for
/// the others.
const MAX_GROUP: usize = 64;

/// A group takes no more batches once it holds this many records, so large batches are not
/// piled into one long transaction (a batch larger than this is a group of its own).
const MAX_GROUP_RECORDS: usize = 10_000;

/// How long a delivery waits for the writer to answer before it is told the sink is
/// unavailable (503), unless set with [`SqliteSink::answer_timeout`]. A stalled disk then
/// costs Polytomic a retry rather than a connection held open; a batch committed after its
/// delivery gave up is found unchanged when it is sent again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS identities (
        sync_id  TEXT NOT NULL,
        identity TEXT NOT NULL,
        hash     TEXT NOT NULL,
        PRIMARY KEY (sync_id, identity)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS records (
        seq       INTEGER PRIMARY KEY,
        sync_id   TEXT NOT NULL,
        sync_name TEXT NOT NULL,
        key       TEXT,
        hash      TEXT NOT NULL,
        fields    TEXT NOT NULL
    );
";

/// Batches kept in one SQLite file, the embedded default.
///
/// The file is in WAL mode, with two tables: `identities` (each identity's last hash) and
/// `records` (the changed records, in store order). One writer thread owns the connection.
/// It takes every batch waiting for it and commits them in one `IMMEDIATE` transaction
/// (group commit: one commit, and with [`Durability::PowerLoss`] one fsync, for many
/// batches), each batch inside a savepoint of its own, and answers each batch only once that
/// transaction is committed. A batch that fails on its own (a constraint, a trigger) is rolled
/// back to its savepoint and refused, without touching the others; when the transaction
/// itself fails (a full disk, an I/O error), every batch in it is refused. A caller waits at
/// most [`answer_timeout`](Self::answer_timeout) for the writer; that wait uses tokio's timer,
/// so use the sink on a runtime with its time driver enabled (as `#[tokio::main]` and every
/// server runtime have).
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
    jobs: mpsc::Sender<Job>,
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
    /// Anything else on the connection (a read, a check), between two groups.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

impl std::fmt::Debug for SqliteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSink")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl SqliteSink {
    /// Opens (or creates) the database file at `path`.
    pub async fn open(
        path: impl AsRef<Path>,
        identity: Identity,
        durability: Durability,
    ) -> Result<Self, SinkError> {
        let failed =
            |error: &dyn std::fmt::Display| SinkError::from_cause("opening the SQLite file", error);
        let path = path.as_ref().to_owned();
        let (jobs, queue) = mpsc::channel();
        let (opened, open_result) = oneshot::channel();
        let writer_identity = identity.clone();
        std::thread::Builder::new()
            .name("sqlite-sink".to_owned())
            .spawn(move || match open(&path, durability) {
                Ok(connection) => {
                    let _ = opened.send(Ok(()));
                    write(connection, &writer_identity, &queue);
                }
                Err(error) => {
                    let _ = opened.send(Err(failed(&error)));
                }
            })
            .map_err(|error| failed(&error))?;
        open_result.await.map_err(|error| failed(&error))??;
        Ok(Self {
            jobs,
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
        self.jobs.send(job).map_err(|_| stopped())?;
        match tokio::time::timeout(self.answer_timeout, answer).await {
            Ok(answer) => answer.map_err(|_| stopped())?,
            Err(_) => Err(SinkError::new(format_args!(
                "{what}: the SQLite writer did not answer within {:?}",
                self.answer_timeout
            ))),
        }
    }

    /// Runs `work` on the connection, on the writer thread, between two groups.
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

fn open(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers with the mode now in force; anything but "wal" is refused, since
    // the durability described above is WAL's.
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
    // A negative size is in KiB.
    connection.pragma_update(None, "cache_size", -i64::from(CACHE_KIB))?;
    connection.execute_batch(SCHEMA)?;
    Ok(connection)
}

/// The writer thread: takes the batches waiting (at most [`MAX_GROUP`]) and commits them as
/// one group, until every sender is gone.
fn write(mut connection: Connection, identity: &Identity, queue: &mpsc::Receiver<Job>) {
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
                Job::Run(work) => {
                    // What was asked before it sees the batches stored before it.
                    commit_group(&mut connection, identity, &mut group);
                    records = 0;
                    // A panic drops `work`'s answer channel, which its caller reads as an
                    // error; the writer carries on for everyone else.
                    let _ = catch_unwind(AssertUnwindSafe(|| work(&mut connection)));
                }
            }
            next = if group.len() < MAX_GROUP && records < MAX_GROUP_RECORDS {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        commit_group(&mut connection, identity, &mut group);
    }
}

/// Stores the batches of `group` in one transaction and answers each of them.
fn commit_group(
    connection: &mut Connection,
    identity: &Identity,
    group: &mut Vec<(SyncRecords, oneshot::Sender<Result<Stored, SinkError>>)>,
) {
    if group.is_empty() {
        return;
    }
    // A panic unwinds the transaction (its drop rolls back): every batch of the group is
    // refused, nothing of it kept, and the writer goes on with the next group.
    let stored = catch_unwind(AssertUnwindSafe(|| {
        store_group(connection, identity, group.iter().map(|(batch, _)| batch))
    }));
    let results = match stored {
        Ok(Ok(results)) => results,
        Ok(Err(error)) => vec![Err(store_failed(&error)); group.len()],
        Err(_) => vec![
            Err(SinkError::new(
                "storing a batch in SQLite: the writer panicked"
            ));
            group.len()
        ],
    };
    for ((_, done), result) in group.drain(..).zip(results) {
        // The delivery may have given up waiting; its batch is stored all the same.
        let _ = done.send(result);
    }
}

fn store_failed(error: &rusqlite::Error) -> SinkError {
    SinkError::from_cause("storing a batch in SQLite", error)
}

/// One transaction for all of `batches`, a savepoint for each: each batch's own result, or
/// `Err` when the transaction failed as a whole and nothing of any batch was kept.
fn store_group<'b>(
    connection: &mut Connection,
    identity: &Identity,
    batches: impl ExactSizeIterator<Item = &'b SyncRecords>,
) -> rusqlite::Result<Vec<Result<Stored, SinkError>>> {
    let mut transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut savepoint = transaction.savepoint()?;
        match store(&savepoint, identity, batch) {
            Ok(stored) => {
                savepoint.commit()?;
                results.push(Ok(stored));
            }
            // SQLite rolled the whole transaction back (a full disk, an I/O error): the
            // batches before this one went with it.
            Err(error) if savepoint.is_autocommit() => return Err(error),
            Err(error) => {
                // This batch alone is undone; a rollback that fails fails the group, since
                // committing would keep half of this batch.
                savepoint.rollback()?;
                savepoint.commit()?;
                results.push(Err(store_failed(&error)));
            }
        }
    }
    transaction.commit()?;
    Ok(results)
}

/// Stores the changed records of one batch through `connection`'s cached statements.
fn store(
    connection: &Connection,
    identity: &Identity,
    batch: &SyncRecords,
) -> rusqlite::Result<Stored> {
    let mut result = Stored::default();
    // One statement decides and records: it inserts a new identity, updates a changed one,
    // and changes no row (so `execute` returns 0) when the hash is the last one.
    let mut remember = connection.prepare_cached(
        "INSERT INTO identities (sync_id, identity, hash) VALUES (?1, ?2, ?3)
         ON CONFLICT (sync_id, identity) DO UPDATE SET hash = excluded.hash
         WHERE hash <> excluded.hash",
    )?;
    let mut append = connection.prepare_cached(
        "INSERT INTO records (sync_id, sync_name, key, hash, fields)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let sync = batch.id().as_str();
    for record in batch {
        let key = identity.key(record);
        let hash = record.hash().as_str();
        if remember.execute(params![sync, Identity::of(key, record), hash])? == 0 {
            result.unchanged += 1;
            continue;
        }
        append.execute(params![
            sync,
            batch.name(),
            key,
            hash,
            record.fields().as_str()
        ])?;
        result.stored += 1;
    }
    Ok(result)
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
        Box::pin(self.run("checking the SQLite file", |connection| {
            // Reads one page of the file: the file and its schema are there and readable.
            connection
                .prepare_cached("SELECT 1 FROM identities LIMIT 1")?
                .exists([])
                .map(drop)
        }))
    }

    fn records(&self) -> SinkFuture<'_, Vec<StoredRecord>> {
        Box::pin(self.run("reading records from SQLite", |connection| {
            let mut select = connection.prepare(
                "SELECT sync_id, sync_name, key, hash, fields FROM records ORDER BY seq",
            )?;
            select
                .query_map([], |row| {
                    Ok(StoredRecord {
                        sync_id: row.get(0)?,
                        sync_name: row.get(1)?,
                        key: row.get(2)?,
                        hash: row.get(3)?,
                        fields: row.get(4)?,
                    })
                })?
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use super::*;
    use crate::testing::{batch, check_sink, fresh_sync_id};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "polytomic-webhook-store-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Makes the file refuse (`refused`) any record whose hash is `boom`.
    /// Makes inserting a record whose hash is `boom` fail: with `ABORT` that statement alone,
    /// with `ROLLBACK` the whole transaction (as a full disk or an I/O error does).
    fn refuse_boom(path: &Path, action: &str) {
        Connection::open(path)
            .unwrap()
            .execute_batch(&format!(
                "CREATE TRIGGER boom BEFORE INSERT ON records WHEN NEW.hash = 'boom'
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
        let path = scratch("group").join("records.db");
        let sink = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap();
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
        let hashes: Vec<String> = sink
            .records()
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.hash)
            .collect();
        assert_eq!(hashes, ["before", "after"]);
        // The refused batch's first record left no last hash behind: a retry stores it.
        let retried = batch(&sync, &[("ok", r#"{"n":2}"#)]);
        assert_eq!(sink.store(&retried).await.unwrap().stored, 1);
    }

    /// An error that makes SQLite abandon the whole transaction refuses every batch of the
    /// group and keeps nothing of them; each is stored when sent again.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failure_of_the_whole_transaction_refuses_the_group_and_keeps_nothing() {
        let path = scratch("rollback").join("records.db");
        let sink = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap();
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
        let path = scratch("stalled").join("records.db");
        let sink = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap()
            .answer_timeout(Duration::from_millis(200));
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

    /// A panic on the writer thread fails only the work that panicked: the sink keeps storing.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_writer_survives_a_panic() {
        let path = scratch("panic").join("records.db");
        let sink = SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap();
        let panicked = sink
            .run::<(), _>("panicking", |_| panic!("a bug in the writer"))
            .await
            .unwrap_err();
        assert!(panicked.to_string().contains("writer failed"), "{panicked}");
        let one = batch(&fresh_sync_id(), &[("h", r#"{"n":1}"#)]);
        assert_eq!(sink.store(&one).await.unwrap().stored, 1);
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
    }
}
