//! The read-only database layer: each refresh's read-only connection, the
//! file it reads and what tells two reads apart. The lenient value readers
//! and the shared queries are in [`crate::source::rows`] (re-exported here).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::source::change::FileId;
use crate::source::change::{self, Reading, ShmHandle};
use crate::source::held::{Held, LiveConnection};
use crate::source::round::{Lease, Pooled, Rounds};
use crate::source::walframes::{self, Changes};
use crate::source::walguard;

pub use crate::source::rows::MAX_SAFE_INTEGER;
pub(crate) use crate::source::rows::RUNNING_JOBS_SQL;
pub(crate) use crate::source::rows::RunCost;
pub(crate) use crate::source::rows::RunningJob;
pub(crate) use crate::source::rows::UNDECODABLE;
pub(crate) use crate::source::rows::amount;
pub(crate) use crate::source::rows::count;
pub(crate) use crate::source::rows::integer;
pub(crate) use crate::source::rows::running_jobs;
pub(crate) use crate::source::rows::text;
pub(crate) use crate::source::rows::timestamp;

/// Why a refresh produced no data.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No connection could be had (file missing, unreadable, not a database, …).
    #[error("cannot open the database: {0}")]
    Open(String),
    /// A query failed (locked database, missing table or column, interrupted, …).
    #[error("{}", query_message(.0))]
    Query(#[from] rusqlite::Error),
    /// Reading `/proc` failed in a way that affects the whole section.
    #[error("{0}")]
    Other(String),
}

/// A failed query in one line: SQLite's message without the statement (a
/// missing table or column says so, and where the schema is described),
/// other errors as rusqlite gives them, on one line.
fn query_message(e: &rusqlite::Error) -> String {
    let message = match e {
        rusqlite::Error::SqlInputError { msg, .. } | rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        other => other.to_string(),
    };
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if message.starts_with("no such table") || message.starts_with("no such column") {
        format!(
            "{message}: the database lacks a table or column the mirror reads (README, \"The database it reads\", \
             lists them)"
        )
    } else {
        message
    }
}

/// How long a query waits on a lock before the refresh fails (rusqlite's default is 5 s).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// What makes the mirror's read-only connections to `path`: each refresh
/// makes one and closes it when it ends (see [`Database`]).
fn connection_manager(path: &Path) -> SqliteConnectionManager {
    // SQLITE_OPEN_READ_ONLY is what `mode=ro` in a URI sets; query_only is defence in depth.
    SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_init(|c| {
            c.busy_timeout(BUSY_TIMEOUT)?;
            // The four built-in sections' statements together, kept while the round's connection lives.
            c.set_prepared_statement_cache_capacity(64);
            register_functions(c)?;
            c.pragma_update(None, "query_only", true)
        })
}

/// Registers the mirror's SQL functions on a connection (every pooled
/// connection has them): `orch_epoch_ms(x)`, a timestamp as milliseconds since
/// the epoch, or NULL when `x` is not text that [`parse_timestamp`] accepts.
/// SQL that compares timestamps uses it, so SQL and Rust accept the same ones.
///
/// [`parse_timestamp`]: crate::source::time::parse_timestamp
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "orch_epoch_ms",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(crate::source::time::timestamp_millis),
                _ => None,
            })
        },
    )
}

/// What the database looked like at the start of a refresh: which file,
/// which schema, and a [`Reading`] of what commits change.
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint {
    file: FileId,
    generation: u64,
    schema_version: i64,
    reading: Reading,
}

impl Fingerprint {
    /// Whether both were read from the same file and schema, so that what a
    /// section kept from one still describes the other's rows (only commits
    /// may lie between them).
    pub fn same_source(&self, other: &Fingerprint) -> bool {
        (self.file, self.generation, self.schema_version) == (other.file, other.generation, other.schema_version)
    }
}

/// The file the path named when last looked at, and this reader's own
/// descriptors on it (see [`crate::source::held`] for when they close).
struct Current {
    file: FileId,
    generation: u64,
    /// Read for the WAL guard and for [`Reading`]s; opened with the file.
    header: Arc<Held>,
    /// The `-shm` beside it, for [`Reading`]s.
    shm: ShmHandle,
}

/// One section's view of the orchestrator's database: the path, and what
/// the mirror holds on the file it names.
///
/// **No connection outlives a refresh.** Each refresh opens a read-only
/// connection and closes it when its read ends. SQLite removes a WAL
/// database's `-wal` and `-shm` only when the closing connection is the last
/// one on the file; a reader that kept its connection open would keep them
/// on disk after the orchestrator's writer closed, and a new file renamed
/// over the path (a restore, `VACUUM INTO` then `mv`) would then be read
/// with the old file's `-wal` and `-shm`, which corrupts it. With nothing held
/// between reads, the writer's last close is the last one, as without the
/// mirror, except when it falls within one of the mirror's reads (README,
/// "Replacing the database while the mirror runs", says what is then left
/// behind and how to tell).
///
/// Every refresh also compares the path's identity with the file it held,
/// so a replaced file (or one that reappeared) is read afresh.
pub struct Database {
    path: PathBuf,
    current: Mutex<Option<Current>>,
    generations: AtomicU64,
    manager: SqliteConnectionManager,
    /// The connection this database's refreshes share with the other
    /// sections' of the same round (see [`crate::source::round`]).
    rounds: Arc<Rounds>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What one refresh reads through, taken under the lock.
struct Opened {
    file: FileId,
    generation: u64,
    reading: Reading,
    /// Held until the first read has taken SQLite's own shared lock.
    gate: Option<walguard::Gate>,
}

impl Database {
    /// A database at `path`; nothing is opened until the first refresh.
    #[cfg(any(test, feature = "tools", feature = "test-util"))]
    pub fn new(path: &Path) -> Self {
        Self::sharing(path, Arc::default())
    }

    /// A database at `path` whose refreshes share their round's connection
    /// with the other databases given the same `rounds`.
    pub(crate) fn sharing(path: &Path, rounds: Arc<Rounds>) -> Self {
        Self {
            path: path.to_path_buf(),
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            manager: connection_manager(path),
            rounds,
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's name, as errors name it: served errors go to unauthenticated
    /// clients, so they never carry the absolute path.
    fn name(&self) -> String {
        self.path.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// `e` with every mention of the path (or its directory) replaced by the file's name.
    fn redact(&self, e: LoadError) -> LoadError {
        let text = e.to_string();
        let full = self.path.display().to_string();
        let dir = self.path.parent().map(|d| d.display().to_string()).filter(|d| d.len() > 1);
        if !text.contains(&full) && !dir.as_ref().is_some_and(|d| text.contains(d.as_str())) {
            return e;
        }
        let mut text = text.replace(&full, &self.name());
        if let Some(dir) = dir {
            text = text.replace(&format!("{dir}/"), "").replace(&dir, ".");
        }
        match e {
            LoadError::Open(_) => LoadError::Open(text.trim_start_matches("cannot open the database: ").to_owned()),
            _ => LoadError::Other(text),
        }
    }

    /// The file the path names now, a reading of it, and the WAL guard's
    /// gate when the guard needs one; or why the file cannot be read.
    fn open(&self) -> Result<Opened, LoadError> {
        let file = FileId::of(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                // Nothing is kept on a file that is gone: a descriptor on it would
                // keep its directory's entry alive, and a watch on that directory
                // would not hear that it was removed.
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
                LoadError::Open(format!("the database file {} is gone", self.name()))
            }
            _ => LoadError::Open(format!("cannot stat {}: {e}", self.name())),
        })?;
        // Only a regular file can be a database: opening a FIFO blocks the
        // opening thread forever, and a directory or a device gives misleading
        // errors ("no such table").
        if !file.regular {
            return Err(LoadError::Open(format!(
                "{} is not a regular file (a directory, FIFO, socket or device); it cannot be a database",
                self.name()
            )));
        }
        // A poisoned lock only means another refresh panicked mid-swap; the value is still usable.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| c.file != file) {
            tracing::warn!(db = %self.path.display(), "database file replaced; reading the new one");
            *current = None;
        }
        if current.is_none() {
            let header = std::fs::File::open(&self.path)
                .map_err(|e| LoadError::Open(format!("cannot open {}: {e}", self.name())))?;
            // The path may have changed between the stat and the open.
            let opened = header.metadata().map(|m| FileId::from_metadata(&m)).ok();
            if opened != Some(file) {
                return Err(LoadError::Open(format!("{} changed while it was opened; trying again", self.name())));
            }
            let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
            *current =
                Some(Current { file, generation, header: Arc::new(Held::new(header)), shm: ShmHandle::default() });
        }
        let Some(c) = current.as_mut() else { unreachable!("set just above") };
        // Before the connection's first read, which makes SQLite open the
        // WAL: the reading (the data read after it is at least as new), then
        // the guard (would SQLite create -wal/-shm the writer cannot write?).
        let reading = change::read(&self.path, &c.header, &mut c.shm);
        let cleared = walguard::check_before_open(&self.path, &c.header).map_err(|e| LoadError::Open(e.to_string()))?;
        Ok(Opened { file: c.file, generation: c.generation, reading, gate: cleared.gate })
    }

    /// Whether nothing was committed since `seen` was read, told without
    /// opening a connection: the same file, and an equal [`Reading`] of it.
    /// `false` whenever that cannot be told (the refresh then runs its queries).
    pub fn unchanged_since(&self, seen: &Fingerprint) -> bool {
        if FileId::of(&self.path).ok() != Some(seen.file) {
            return false;
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = current.as_mut().filter(|c| c.file == seen.file && c.generation == seen.generation) else {
            return false;
        };
        change::read(&self.path, &c.header, &mut c.shm).unchanged_since(&seen.reading)
    }

    /// Which rows the commits between the read that gave `seen` and the one
    /// that gave `now` can have touched (see [`walframes`]). Call it within
    /// the later read's `with_conn`: its open transaction keeps the WAL from
    /// restarting under the frames being read.
    pub fn changes_since(&self, seen: &Fingerprint, now: &Fingerprint) -> Changes {
        if !seen.same_source(now) {
            return Changes::Unknown;
        }
        let (Some(earlier), Some(later)) = (seen.reading.wal_header(), now.reading.wal_header()) else {
            return Changes::Unknown;
        };
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = current.as_ref().filter(|c| c.file == now.file && c.generation == now.generation) else {
            return Changes::Unknown;
        };
        let Some(present) = c.shm.header() else { return Changes::Unknown };
        // Closed only when no connection is open (see `held`).
        let wal = (present.max_frame != earlier.max_frame)
            .then(|| std::fs::File::open(&walguard::side_files(&self.path)[0]).ok().map(Held::new))
            .flatten();
        walframes::changes(&earlier, &later, &present, wal.as_deref())
    }

    /// Runs `f` on a new read-only connection to the file the path names
    /// now, with the database's current fingerprint, interrupting any
    /// statement still running at `deadline`. The connection is closed
    /// before this returns.
    pub fn with_conn<T>(
        &self,
        deadline: Duration,
        f: impl FnOnce(&Connection, Fingerprint) -> Result<T, LoadError>,
    ) -> Result<T, LoadError> {
        let Opened { file, generation, reading, gate } = self.open().map_err(|e| self.redact(e))?;
        // The round's connection when another section just used it; else a
        // new one, counted before it opens (see `held`) and shared in turn.
        let pooled = match self.rounds.take(file) {
            Some(pooled) => Ok(pooled),
            None => {
                let live = LiveConnection::begin();
                let header =
                    self.current.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| Arc::clone(&c.header));
                match (r2d2::ManageConnection::connect(&self.manager), header) {
                    (Ok(conn), Some(header)) => Ok(Pooled::new(conn, live, file, self.path.clone(), header)),
                    (Err(e), _) => Err(LoadError::Open(e.to_string())),
                    (Ok(_), None) => Err(LoadError::Open(format!("{} changed while it was opened", self.name()))),
                }
                .inspect_err(|_| self.rounds.not_opened())
            }
        };
        let lease = pooled.map(|p| Lease::new(&self.rounds, p));
        let out = lease.as_ref().map_err(|e| LoadError::Open(e.to_string())).and_then(|lease| {
            let conn = lease.conn().ok_or_else(|| LoadError::Other("no connection".into()))?;
            with_deadline(conn, deadline, |conn| {
                // One read transaction per refresh: the section's queries see one
                // consistent snapshot. Reading sqlite_schema first takes SQLite's
                // shared lock and loads the schema as it is now.
                let tx = conn.unchecked_transaction()?;
                // Cached: the sections of a round prepare them once on its connection.
                tx.prepare_cached("SELECT count(*) FROM sqlite_schema")?.query_row([], |_| Ok(()))?;
                let schema_version: i64 = tx.prepare_cached("PRAGMA schema_version")?.query_row([], |r| r.get(0))?;
                // This connection now holds SQLite's shared lock: the gate has done its work.
                drop(gate);
                if let Some(foreign) = walguard::foreign_side_files(&self.path) {
                    tracing::error!(db = %self.path.display(), "{foreign}");
                    return Err(LoadError::Open(foreign));
                }
                f(&tx, Fingerprint { file, generation, schema_version, reading })
            })
        });
        // Given back for the next section of the round; it closes soon after
        // (then the look for a `-wal` left behind is made).
        drop(lease);
        out.map_err(|e| self.redact(e))
    }
}

/// Runs `f` on `conn`, interrupting any statement still running at `deadline`.
/// A query that outlives it (a huge table, a pathological plan) is abandoned
/// rather than left to hold the section's only refresh slot.
fn with_deadline<T>(
    conn: &Connection,
    deadline: Duration,
    f: impl FnOnce(&Connection) -> Result<T, LoadError>,
) -> Result<T, LoadError> {
    let until = Instant::now() + deadline;
    conn.progress_handler(10_000, Some(move || Instant::now() > until))?;
    f(conn)
}

/// A fresh database for unit tests: the schema, the mirror's SQL functions,
/// then `rows`. The directory lives as long as the returned guard.
#[cfg(test)]
pub(crate) fn test_db(rows: &str) -> Result<(tempfile::TempDir, Connection), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let conn = Connection::open(dir.path().join("test.sqlite"))?;
    register_functions(&conn)?;
    conn.execute_batch(include_str!("../schema.sql"))?;
    conn.execute_batch(rows)?;
    Ok((dir, conn))
}

#[cfg(test)]
mod round_tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::Database;
    use crate::source::round::Rounds;

    /// Two sections of a round: the second waits for the first's connection
    /// and reads through it (a per-connection setting the first made shows),
    /// and once both are done nothing is kept open.
    #[test]
    fn a_round_shares_one_connection_and_keeps_none() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.db");
        rusqlite::Connection::open(&path)?.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
        // A generous wait: the second section's thread may start late on a busy machine.
        let rounds = Arc::new(Rounds::waiting(Duration::from_secs(10)));
        let first = Database::sharing(&path, Arc::clone(&rounds));
        let second = Arc::new(Database::sharing(&path, Arc::clone(&rounds)));
        let waiter = first.with_conn(Duration::from_secs(10), |conn, _| {
            conn.pragma_update(None, "cache_size", -1234)?;
            let second = Arc::clone(&second);
            let waiter = std::thread::spawn(move || {
                second.with_conn(Duration::from_secs(10), |conn, _| {
                    Ok(conn.pragma_query_value(None, "cache_size", |r| r.get::<_, i64>(0))?)
                })
            });
            // The second section waits for this connection while it is in use.
            let until = Instant::now() + Duration::from_secs(10);
            while rounds.waiting_now() == 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(waiter)
        })?;
        let size = waiter.join().map_err(|_| "the second section panicked")??;
        assert_eq!(size, -1234, "the second section read through the first one's connection");
        assert!(rounds.is_empty(), "a connection nobody waits for is closed at once");
        Ok(())
    }
}
