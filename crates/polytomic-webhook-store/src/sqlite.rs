//! [`SqliteSink`]: one SQLite file, for a receiver on one machine.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use polytomic_webhook_event::SyncRecords;
use rusqlite::{Connection, TransactionBehavior, params};

use crate::{Durability, Identity, Sink, SinkError, SinkFuture, Stored, StoredRecord};

/// How long a write waits for another connection (a `dump` reading, say) to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
/// The file is in WAL mode; each batch is one `IMMEDIATE` transaction that updates the
/// identities' last hashes (table `identities`) and appends the changed records
/// (table `records`, in store order). The blocking SQLite calls run on tokio's blocking
/// threads, one batch at a time.
///
/// ```
/// use polytomic_webhook_store::{Durability, Identity, Sink, SqliteSink};
///
/// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
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
    connection: Arc<Mutex<Connection>>,
    identity: Identity,
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
        let path = path.as_ref().to_owned();
        let connection = tokio::task::spawn_blocking(move || open(&path, durability))
            .await
            .map_err(|error| SinkError::from_cause("opening the SQLite file", error))?
            .map_err(|error| SinkError::from_cause("opening the SQLite file", error))?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            identity,
        })
    }

    /// Runs `work` on the connection on a blocking thread.
    async fn run<T, W>(&self, what: &'static str, work: W) -> Result<T, SinkError>
    where
        T: Send + 'static,
        W: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|error| SinkError::from_cause(what, error))?
        .map_err(|error| SinkError::from_cause(what, error))
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
    connection.execute_batch(SCHEMA)?;
    Ok(connection)
}

/// One batch, one transaction: nothing of it is kept unless all of it is.
fn store(
    connection: &mut Connection,
    identity: &Identity,
    batch: &SyncRecords,
) -> rusqlite::Result<Stored> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut result = Stored::default();
    {
        // One statement decides and records: it inserts a new identity, updates a changed one,
        // and changes no row (so `execute` returns 0) when the hash is the last one.
        let mut remember = transaction.prepare_cached(
            "INSERT INTO identities (sync_id, identity, hash) VALUES (?1, ?2, ?3)
             ON CONFLICT (sync_id, identity) DO UPDATE SET hash = excluded.hash
             WHERE hash <> excluded.hash",
        )?;
        let mut append = transaction.prepare_cached(
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
    }
    transaction.commit()?;
    Ok(result)
}

impl Sink for SqliteSink {
    fn store<'a>(&'a self, batch: &'a SyncRecords) -> SinkFuture<'a, Stored> {
        // The batch's fields share the delivery's buffer: the clone costs a handle per record.
        let batch = batch.clone();
        let identity = self.identity.clone();
        Box::pin(self.run("storing a batch in SQLite", move |connection| {
            store(connection, &identity, &batch)
        }))
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
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER boom BEFORE INSERT ON records WHEN NEW.hash = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
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
            let connection = sink.connection.lock().unwrap();
            let pragma = |name: &str| -> String {
                connection
                    .query_row(&format!("PRAGMA {name}"), [], |row| {
                        row.get::<_, rusqlite::types::Value>(0)
                    })
                    .map(|value| format!("{value:?}"))
                    .unwrap()
            };
            assert_eq!(pragma("journal_mode"), r#"Text("wal")"#);
            // 1 is NORMAL, 2 is FULL.
            assert_eq!(pragma("synchronous"), format!("Integer({expected})"));
        }
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
