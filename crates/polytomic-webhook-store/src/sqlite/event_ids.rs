//! [`SqliteEventIdStore`]: organisation event ids in a SQLite file of their own, so that a
//! receiver on one machine still recognises a handled event after it restarts.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use polytomic_webhook::dedup::{EventIdStore, LeaseToken, Reservation, StoreError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::file::{self, APPLICATION_ID, Access};
use crate::SinkError;

/// `PRAGMA application_id` of every file this store sets up: `PWHE` in ASCII. The sink's
/// files have their own (`PWHK`), so neither takes the other's file.
const EVENT_IDS_APPLICATION_ID: i32 = 0x5057_4845;

/// The most operations waiting for the store's thread; past it an operation fails at once
/// (the layer answers 503) rather than queueing behind a stalled disk without end.
const MAX_WAITING: usize = 256;

/// Expired rows each reservation deletes: the table holds the ids of one TTL, not of all time,
/// and no single reservation pays for a long backlog.
const PURGE_BATCH: usize = 64;

const DONE: &str = "done";

const SCHEMA: &str = "
    CREATE TABLE event_ids (
        id      TEXT PRIMARY KEY NOT NULL,
        state   TEXT NOT NULL,
        expires INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX event_ids_expires ON event_ids (expires);
";

/// An [`EventIdStore`] in one SQLite file, kept across restarts, for a receiver on one
/// machine (several processes may share the file; replicas on several machines need
/// `RedisEventIdStore`).
///
/// The file has one table, `event_ids`: a row per id, whose `state` is the holding
/// delivery's [`LeaseToken`] (32 hex digits) while its handler runs and `done` once it
/// succeeded, and `expires` the end of the lease or TTL in Unix milliseconds, by this
/// machine's clock. Each operation is one transaction; commit and release change the row only
/// while it holds their token. Each reservation deletes up to 64 expired rows, so the file
/// holds about one TTL's ids.
///
/// **Whose file.** As with `SqliteSink`: the store marks each file it sets up with `PRAGMA
/// application_id = 1347897413` (`PWHE` in ASCII), and refuses, having written nothing to
/// it, a file that is neither empty nor marked so: another application's, or a sink's
/// (give each its own file). A file it cannot write is refused at open.
///
/// **Never on a runtime worker.** One thread of its own owns the connection; an operation
/// is handed to it and awaited. At most 256 wait; the next fails at once. The file is in WAL
/// mode with `synchronous=NORMAL`: a handled id survives the process crashing or being
/// killed; the last ones before a power loss may be forgotten (their events would then be
/// handled again).
///
/// ```
/// use polytomic_webhook::dedup::{EventIdStore, LeaseToken, Reservation};
/// use polytomic_webhook_store::SqliteEventIdStore;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("sqlite-event-ids-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = SqliteEventIdStore::open(dir.join("event-ids.db")).await.unwrap();
/// let token = LeaseToken::random().unwrap();
/// let lease = Duration::from_secs(60);
/// assert_eq!(store.reserve("evt-1", &token, lease).await.unwrap(), Reservation::Claimed);
/// assert!(store.commit("evt-1", &token, Duration::from_secs(3600)).await.unwrap());
/// drop(store);
///
/// // After a restart, the event is still a duplicate.
/// let store = SqliteEventIdStore::open(dir.join("event-ids.db")).await.unwrap();
/// let retry = LeaseToken::random().unwrap();
/// assert_eq!(store.reserve("evt-1", &retry, lease).await.unwrap(), Reservation::Done);
/// # drop(store);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct SqliteEventIdStore {
    /// The thread's queue; the thread ends once every clone of the store is gone.
    jobs: mpsc::SyncSender<Job>,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

impl std::fmt::Debug for SqliteEventIdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEventIdStore").finish_non_exhaustive()
    }
}

impl SqliteEventIdStore {
    /// Opens (or creates) the file at `path`; see the type's docs for which files it takes.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, SinkError> {
        let failed = |error: &dyn std::fmt::Display| {
            SinkError::from_cause("opening the SQLite event-id file", error)
        };
        let path = path.as_ref().to_owned();
        let (jobs, queue) = mpsc::sync_channel::<Job>(MAX_WAITING);
        let (opened, open_result) = oneshot::channel();
        std::thread::Builder::new()
            .name("sqlite-event-ids".to_owned())
            .spawn(move || match open_file(&path) {
                Ok(mut connection) => {
                    let _ = opened.send(Ok(()));
                    while let Ok(job) = queue.recv() {
                        // A panic drops the job's answer channel, which its caller reads as an
                        // error; the thread carries on for the others.
                        let _ = catch_unwind(AssertUnwindSafe(|| job(&mut connection)));
                    }
                }
                Err(error) => {
                    let _ = opened.send(Err(failed(&error)));
                }
            })
            .map_err(|error| failed(&error))?;
        open_result.await.map_err(|error| failed(&error))??;
        Ok(Self { jobs })
    }

    /// Runs `work` on the store's thread and waits for its answer.
    async fn run<T, W>(&self, what: &'static str, work: W) -> Result<T, StoreError>
    where
        T: Send + 'static,
        W: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let _ = done.send(work(connection));
        });
        self.jobs.try_send(job).map_err(|error| {
            StoreError::new(SinkError::new(match error {
                mpsc::TrySendError::Full(_) => format!(
                    "{what}: {MAX_WAITING} operations are already waiting for the SQLite file"
                ),
                mpsc::TrySendError::Disconnected(_) => {
                    format!("{what}: the SQLite event-id thread stopped")
                }
            }))
        })?;
        match answer.await {
            Ok(result) => {
                result.map_err(|error| StoreError::new(SinkError::from_cause(what, error)))
            }
            Err(_) => Err(StoreError::new(SinkError::new(format_args!(
                "{what}: the SQLite event-id thread failed"
            )))),
        }
    }
}

/// Opens and, when new, sets up the file, refusing one that is not this store's.
fn open_file(path: &Path) -> rusqlite::Result<Connection> {
    let (connection, empty) = file::open_as(path, Access::Write, layout)?;
    let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, not wal"
        )));
    }
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    if empty {
        // One transaction: no file is left with the table but without the mark.
        connection.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {EVENT_IDS_APPLICATION_ID}; COMMIT;"
        ))?;
    }
    Ok(connection)
}

/// Whether the file is empty (`true`) or this store's (`false`); an error for any other.
fn layout(connection: &Connection) -> rusqlite::Result<bool> {
    let id: i32 = connection.query_row("PRAGMA application_id", [], |row| row.get(0))?;
    if id == EVENT_IDS_APPLICATION_ID {
        return Ok(false);
    }
    if id == APPLICATION_ID {
        return Err(file::refused(
            "the file is a SqliteSink's (it holds batches): give the event-id store a file of \
             its own; it was left as it was"
                .to_owned(),
        ));
    }
    let objects: i64 =
        connection.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
    if id == 0 && objects == 0 {
        return Ok(true);
    }
    Err(file::refused(format!(
        "the file belongs to another application: it is not empty, and does not have the \
         event-id store's mark (application_id {EVENT_IDS_APPLICATION_ID}, it has {id}); it \
         was left as it was: give the store a new file"
    )))
}

/// Now, and `now + after`, in Unix milliseconds.
fn now_and(after: Duration) -> (i64, i64) {
    let millis = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    let now = millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    );
    (now, now.saturating_add(millis(after)))
}

fn reserve(
    connection: &mut Connection,
    id: &str,
    token: &str,
    lease: Duration,
) -> rusqlite::Result<Reservation> {
    let (now, expires) = now_and(lease);
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state: Option<String> = transaction
        .query_row(
            "SELECT state FROM event_ids WHERE id = ?1 AND expires > ?2",
            params![id, now],
            |row| row.get(0),
        )
        .optional()?;
    let reservation = match state.as_deref() {
        Some(DONE) => Reservation::Done,
        Some(holder) if holder == token => Reservation::Claimed,
        Some(_) => Reservation::InProgress,
        None => {
            transaction.execute(
                "INSERT OR REPLACE INTO event_ids (id, state, expires) VALUES (?1, ?2, ?3)",
                params![id, token, expires],
            )?;
            transaction.execute(
                "DELETE FROM event_ids WHERE id IN
                     (SELECT id FROM event_ids WHERE expires <= ?1 LIMIT ?2)",
                params![now, PURGE_BATCH],
            )?;
            Reservation::Claimed
        }
    };
    transaction.commit()?;
    Ok(reservation)
}

impl EventIdStore for SqliteEventIdStore {
    fn reserve(
        &self,
        id: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Reservation, StoreError>> + Send {
        let (id, token) = (id.to_owned(), token.to_string());
        self.run("reserving an event id", move |connection| {
            reserve(connection, &id, &token, lease)
        })
    }

    fn commit(
        &self,
        id: &str,
        token: &LeaseToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (id, token) = (id.to_owned(), token.to_string());
        self.run("committing an event id", move |connection| {
            let (now, expires) = now_and(ttl);
            let changed = connection.execute(
                "UPDATE event_ids SET state = ?3, expires = ?4
                 WHERE id = ?1 AND state = ?2 AND expires > ?5",
                params![id, token, DONE, expires, now],
            )?;
            Ok(changed == 1)
        })
    }

    fn release(
        &self,
        id: &str,
        token: &LeaseToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (id, token) = (id.to_owned(), token.to_string());
        self.run("releasing an event id", move |connection| {
            let (now, _) = now_and(Duration::ZERO);
            let changed = connection.execute(
                "DELETE FROM event_ids WHERE id = ?1 AND state = ?2 AND expires > ?3",
                params![id, token, now],
            )?;
            Ok(changed == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use polytomic_webhook::testing::event_ids::{self, StallingStore};

    use super::*;
    use crate::sqlite::tests::{closed_sink_file, file_state, scratch};

    const LEASE: Duration = Duration::from_secs(60);
    const TTL: Duration = Duration::from_secs(3600);

    async fn fresh_store(name: &str) -> (SqliteEventIdStore, std::path::PathBuf) {
        let path = scratch(name).join("event-ids.db");
        (SqliteEventIdStore::open(&path).await.unwrap(), path)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_sqlite_store_passes_the_shared_suite() {
        let (store, _) = fresh_store("event-ids-suite").await;
        event_ids::check_event_id_store(&store).await;
        event_ids::leases_and_ttls_run_out(&store).await;
    }

    /// The stuck-reservation case, stalled by a wrapper (SQLite's own stalls are a disk's),
    /// for a shorter pause than Redis's: what is under test is the token compare-and-delete.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_sqlite_store_releases_stalled_reservations() {
        let (store, _) = fresh_store("event-ids-stalled").await;
        let store = Arc::new(StallingStore::new(store));
        let pause = Duration::from_millis(1200);
        event_ids::stalled_reservations_are_released(Arc::clone(&store), &*store, pause).await;
    }

    /// Handled ids, and leases still running, are what the file says after a restart.
    #[tokio::test(flavor = "multi_thread")]
    async fn ids_and_leases_survive_reopening_the_file() {
        let (store, path) = fresh_store("event-ids-reopen").await;
        let (first, second) = (LeaseToken::random().unwrap(), LeaseToken::random().unwrap());
        assert_eq!(
            store.reserve("done", &first, LEASE).await.unwrap(),
            Reservation::Claimed
        );
        assert!(store.commit("done", &first, TTL).await.unwrap());
        assert_eq!(
            store.reserve("held", &first, LEASE).await.unwrap(),
            Reservation::Claimed
        );
        drop(store);
        let store = SqliteEventIdStore::open(&path).await.unwrap();
        assert_eq!(
            store.reserve("done", &second, LEASE).await.unwrap(),
            Reservation::Done
        );
        assert_eq!(
            store.reserve("held", &second, LEASE).await.unwrap(),
            Reservation::InProgress
        );
        assert!(store.release("held", &first).await.unwrap());
    }

    /// Another application's file and a sink's file are refused, each with its message, and
    /// left as they were; the sink refuses the store's file in turn.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_that_is_not_the_stores_is_refused_and_left_as_it_was() {
        let path = scratch("event-ids-foreign").join("app.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);")
            .unwrap();
        let before = file_state(&path);
        let error = SqliteEventIdStore::open(&path).await.unwrap_err();
        assert!(error.to_string().contains("another application"), "{error}");
        assert_eq!(file_state(&path), before);

        let sink_file = closed_sink_file("event-ids-sink-file").await;
        let before = file_state(&sink_file);
        let error = SqliteEventIdStore::open(&sink_file).await.unwrap_err();
        assert!(error.to_string().contains("SqliteSink's"), "{error}");
        assert_eq!(file_state(&sink_file), before);

        let (store, own) = fresh_store("event-ids-for-the-sink").await;
        drop(store);
        let error =
            crate::SqliteSink::open(&own, crate::Identity::hash(), crate::Durability::Process)
                .await
                .unwrap_err();
        assert!(error.to_string().contains("another application"), "{error}");
    }
}
