//! Reading the stored records a page at a time, on a thread with a read-only connection of
//! its own: what `dump` and [`Sink::records`](crate::Sink::records) use, without the writer,
//! its checkpoint thread or the identities in memory that [`SqliteSink::open`](super::SqliteSink::open) sets up.

use std::path::Path;

use rusqlite::{Connection, params};
use tokio::sync::mpsc;

use super::decode_records;
use super::file::{self, Access, Layout};
use crate::{Pages, RecordStream, SinkError, SinkFuture, StoredRecord};

/// Rows asked for by one query.
const PAGE_ROWS: usize = 64;

/// A page takes no more rows once it holds this many records (a row holds a whole batch).
const PAGE_RECORDS: usize = 1_000;

/// Pages read ahead of the one being taken.
const PAGES_AHEAD: usize = 2;

/// What the reading thread sends: a page, `None` at the end, or why it stopped.
type Page = Result<Option<Vec<StoredRecord>>, SinkError>;

fn read_failed(error: &dyn std::fmt::Display) -> SinkError {
    SinkError::from_cause("reading records from SQLite", error)
}

/// Every record stored in the file at `path`, in store order, a page at a time. A file no sink
/// has set up (an empty one, say) holds no records; a missing file is an error, not a new one.
pub(crate) fn record_stream(path: &Path) -> RecordStream<'static> {
    let (pages, received) = mpsc::channel(PAGES_AHEAD);
    let spawn_failed = pages.clone();
    let path = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("sqlite-read".to_owned())
        .spawn(move || {
            let end = match read_pages(&path, &pages) {
                Ok(()) => Ok(None),
                Err(error) => Err(read_failed(&error)),
            };
            // The stream may be gone (a `dump` whose output closed): nobody is left to tell.
            let _ = pages.blocking_send(end);
        });
    if let Err(error) = spawned {
        let _ = spawn_failed.try_send(Err(read_failed(&error)));
    }
    RecordStream::from_pages(Received(received))
}

/// Sends the file's records to `pages`, until the last row committed when it started (so that
/// a listing ends while batches keep coming) or until nobody takes them.
fn read_pages(path: &Path, pages: &mpsc::Sender<Page>) -> rusqlite::Result<()> {
    let (connection, layout) = file::open(path, Access::Read)?;
    if layout == Layout::Empty {
        return Ok(());
    }
    let last: i64 =
        connection.query_row("SELECT coalesce(max(seq), 0) FROM batches", [], |row| {
            row.get(0)
        })?;
    let mut after = 0;
    while after < last {
        // Each page is a statement, and a read transaction, of its own: between pages the
        // reader holds no snapshot, which would keep the WAL from starting again.
        let (page, seen) = read_page(&connection, after, last)?;
        if seen == after {
            break; // The rows left were deleted meanwhile.
        }
        after = seen;
        if pages.blocking_send(Ok(Some(page))).is_err() {
            break;
        }
    }
    Ok(())
}

/// The records of the rows after `after` up to `last`, and the last row's `seq`.
fn read_page(
    connection: &Connection,
    after: i64,
    last: i64,
) -> rusqlite::Result<(Vec<StoredRecord>, i64)> {
    let mut select = connection.prepare_cached(
        "SELECT seq, sync_id, sync_name, records FROM batches
         WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
    )?;
    let mut rows = select.query(params![after, last, PAGE_ROWS])?;
    let mut records = Vec::new();
    let mut seen = after;
    while let Some(row) = rows.next()? {
        seen = row.get(0)?;
        let sync_id = row.get_ref(1)?.as_str()?;
        let sync_name = row.get_ref(2)?.as_str()?;
        for record in decode_records(row, 3)? {
            records.push(StoredRecord {
                sync_id: sync_id.to_owned(),
                sync_name: sync_name.to_owned(),
                key: record.key().map(str::to_owned),
                hash: record.hash().to_owned(),
                fields: record.fields().to_owned(),
            });
        }
        if records.len() >= PAGE_RECORDS {
            break;
        }
    }
    Ok((records, seen))
}

/// The pages the reading thread sends.
struct Received(mpsc::Receiver<Page>);

impl Pages for Received {
    fn next_page(&mut self) -> SinkFuture<'_, Option<Vec<StoredRecord>>> {
        Box::pin(async move {
            match self.0.recv().await {
                Some(page) => page,
                // It always says how it ended, unless it panicked.
                None => Err(SinkError::new(
                    "reading records from SQLite: the reading thread failed",
                )),
            }
        })
    }
}
