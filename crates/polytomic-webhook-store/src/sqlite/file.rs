//! Whose file it is, and whether the sink can write it: checked on every connection the sink
//! opens (the writer's, the checkpoint thread's, `dump`'s) before anything is written to it.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, ffi};

/// `PRAGMA application_id` of every file this sink sets up: `PWHK` in ASCII. A file with
/// another application's id, or none and tables that are not this sink's, is refused.
pub(super) const APPLICATION_ID: i32 = 0x5057_484B;

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// Storing (the writer) or checkpointing: the file must be writable, and is created when
    /// missing.
    Write,
    /// Reading (`dump`): through a read-only connection, and the file must exist.
    Read,
}

/// What an acceptable file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// Nothing at all (a new file, or one no application has set up): the writer sets it up.
    Empty,
    /// Marked with [`APPLICATION_ID`].
    Marked,
    /// This sink's exact tables without the mark: a file from before files were marked. The
    /// writer marks it.
    Unmarked,
}

/// Opens `path` for `access`, and refuses, having written nothing to it, a file this sink
/// cannot write (for [`Access::Write`]) or one that is not its own.
pub(super) fn open(path: &Path, access: Access) -> rusqlite::Result<(Connection, Layout)> {
    open_as(path, access, layout)
}

/// [`open`] for a file whose owner `layout` recognises (it only reads, and errs for a file
/// that is not its own): the sink's, or the event-id store's.
pub(super) fn open_as<L>(
    path: &Path,
    access: Access,
    layout: impl FnOnce(&Connection) -> rusqlite::Result<L>,
) -> rusqlite::Result<(Connection, L)> {
    let connection = match access {
        Access::Write => Connection::open(path),
        Access::Read => Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY),
    }
    .map_err(|error| explain(error, path, access))?;
    connection.busy_timeout(super::BUSY_TIMEOUT)?;
    // SQLite opens a file it may not write read-only, without a word: every batch would then
    // fail while the sink looked healthy.
    if access == Access::Write && connection.is_readonly(rusqlite::MAIN_DB)? {
        return Err(refused(format!(
            "{} is read-only (its permissions, an immutable flag or a read-only mount): the sink \
             could not store anything in it",
            path.display()
        )));
    }
    let layout = layout(&connection).map_err(|error| explain(error, path, access))?;
    Ok((connection, layout))
}

/// What the file holds; an error for a file that is not this sink's. Only reads.
fn layout(connection: &Connection) -> rusqlite::Result<Layout> {
    let id: i32 = connection.query_row("PRAGMA application_id", [], |row| row.get(0))?;
    if id == APPLICATION_ID {
        return Ok(Layout::Marked);
    }
    let mut select = connection.prepare("SELECT type, name FROM sqlite_master ORDER BY name")?;
    let objects = select
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if objects.iter().any(|(_, name)| name == "identities") {
        return Err(refused(
            "the file has the layout of an earlier version (tables `identities` and `records`); \
             store into a new file"
                .to_owned(),
        ));
    }
    if id == 0 && objects.is_empty() {
        return Ok(Layout::Empty);
    }
    if id == 0 && is_our_schema(connection, &objects)? {
        return Ok(Layout::Unmarked);
    }
    Err(refused(format!(
        "the file belongs to another application: it is not empty, and has neither this \
         sink's mark (application_id {APPLICATION_ID}, it has {id}) nor only its tables; it \
         was left as it was: store into a new file"
    )))
}

/// Whether `objects` are exactly this sink's: `batches` with its columns, and the table SQLite
/// keeps for its `AUTOINCREMENT`.
fn is_our_schema(connection: &Connection, objects: &[(String, String)]) -> rusqlite::Result<bool> {
    let names: Vec<(&str, &str)> = objects
        .iter()
        .map(|(kind, name)| (kind.as_str(), name.as_str()))
        .collect();
    if names != [("table", "batches"), ("table", "sqlite_sequence")] {
        return Ok(false);
    }
    let mut select = connection.prepare(
        "SELECT name, type, \"notnull\", pk FROM pragma_table_info('batches') ORDER BY cid",
    )?;
    let columns = select
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let expected = [
        ("seq", "INTEGER", 0, 1),
        ("sync_id", "TEXT", 1, 0),
        ("sync_name", "TEXT", 1, 0),
        ("records", "TEXT", 1, 0),
    ];
    Ok(columns.len() == expected.len()
        && columns.iter().zip(expected).all(|(column, expected)| {
            (column.0.as_str(), column.1.as_str(), column.2, column.3) == expected
        }))
}

/// An error with `message` as the whole of its text (not `CANTOPEN`, which [`explain`] takes
/// for SQLite's own).
pub(super) fn refused(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_NOTADB), Some(message))
}

/// SQLite's "unable to open database file" names neither the file nor the likely cause.
fn explain(error: rusqlite::Error, path: &Path, access: Access) -> rusqlite::Error {
    if error.sqlite_error_code() != Some(rusqlite::ErrorCode::CannotOpen) {
        return error;
    }
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.display().to_string(),
        _ => ".".to_owned(),
    };
    refused(match access {
        Access::Write => format!(
            "cannot open or create {} and the -wal and -shm files beside it: is {directory} \
             there, and writable? ({error})",
            path.display()
        ),
        Access::Read => format!("cannot open {}: is it there? ({error})", path.display()),
    })
}

/// Whether `error` will most likely be the next write's too: the disk or the file refuses
/// writes (full, read-only), rather than one statement or one batch failing.
pub(super) fn is_lasting(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::ReadOnly)
    )
}
