//! What says that nothing was committed since a refresh, without holding a
//! connection between refreshes.
//!
//! The mirror opens its connection for one refresh and closes it after (see
//! [`crate::source::db`] for why), so SQLite's `PRAGMA data_version`, which
//! is per connection, cannot compare two refreshes. What SQLite itself
//! compares can:
//!
//! - in WAL mode, the WAL-index header at the start of the `-shm` (48 bytes:
//!   a counter every write transaction moves, the last valid frame, the WAL's
//!   salts and checksums; SQLite's file format, "The WAL-Index Format"). A
//!   commit changes it; a checkpoint does not. Once a WAL holds frames its
//!   salts are random, so an equal header means the same WAL. An empty WAL's
//!   header is always the same, though, and a `-shm` removed and made again
//!   (a writer closed, and another opened and committed) can show it again
//!   under the same inode number: for an empty WAL the reading adds the
//!   `-shm`'s identity and change time, and a `-shm` changed less than
//!   [`RACY`] ago gives no reading (as Git treats a file changed within its
//!   timestamps' resolution).
//! - in rollback-journal mode, the file change counter in the database header
//!   (offset 24), which every commit increments.
//!
//! The reading is taken *before* the refresh's read transaction starts, so
//! the data read is at least as new as the reading: two equal readings
//! mean the data read after the first is still current. A reading taken
//! while a writer updates the header may be torn; torn readings only ever
//! differ (a needless refresh), never hide a commit. Where no reading is
//! possible (no `-shm` yet, an unreadable one, another file system's
//! semantics) the answer is "changed", and the refresh runs its queries.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::source::held::Held;
use crate::source::walframes::IndexHeader;
use crate::source::walguard::{Gate, side_files};

/// Which file a path names right now: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    /// Whether it is a regular file (the only kind that can be a database).
    pub(crate) regular: bool,
}

impl FileId {
    /// The identity of the file at `path`.
    pub(crate) fn of(path: &Path) -> std::io::Result<FileId> {
        Ok(Self::from_metadata(&std::fs::metadata(path)?))
    }

    /// The identity of the file `meta` describes.
    pub(crate) fn from_metadata(meta: &std::fs::Metadata) -> FileId {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileId { dev: meta.dev(), ino: meta.ino(), regular: meta.is_file() }
        }
        #[cfg(not(unix))]
        {
            FileId { dev: 0, ino: 0, regular: meta.is_file() }
        }
    }
}

/// How recent a `-shm`'s creation may be and its header still be trusted:
/// longer than the coarsest timestamp resolution in use (2 s on FAT, 1 s on ext3).
pub(crate) const RACY: Duration = Duration::from_secs(3);

/// Bytes of the WAL-index header that a commit changes (its first copy).
const WAL_INDEX_HEADER: usize = 48;

/// One reading of what tells commits apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Nothing can be said: never equal to another reading.
    Unknown,
    /// A rollback-journal database's file change counter.
    Rollback([u8; 4]),
    /// A WAL database's WAL-index header; for an empty WAL, also which
    /// `-shm` and its change time.
    Wal { header: [u8; WAL_INDEX_HEADER], empty: Option<(FileId, (i64, i64))> },
}

impl Reading {
    /// The WAL-index header of a WAL reading, when it is whole (not torn by a writer).
    pub(crate) fn wal_header(&self) -> Option<IndexHeader> {
        match self {
            Reading::Wal { header, .. } => IndexHeader::parse(header),
            _ => None,
        }
    }

    /// Whether nothing was committed between `earlier` and this reading.
    pub(crate) fn unchanged_since(&self, earlier: &Reading) -> bool {
        !matches!(self, Reading::Unknown) && self == earlier
    }
}

/// The `-shm` this reader keeps a descriptor on, and which file it is.
#[derive(Debug, Default)]
pub(crate) struct ShmHandle(Option<(FileId, Held)>);

impl ShmHandle {
    /// The WAL-index header as it is now, when whole.
    pub(crate) fn header(&self) -> Option<IndexHeader> {
        let (_, file) = self.0.as_ref()?;
        let mut header = [0u8; WAL_INDEX_HEADER];
        file.read_exact_at(&mut header, 0).ok()?;
        IndexHeader::parse(&header)
    }
}

/// Reads the database's state through `header` (a descriptor on the
/// database file) and the `-shm` beside it, reopening `shm` when the file
/// at its path is another one.
pub(crate) fn read(db: &Path, header: &Arc<Held>, shm: &mut ShmHandle) -> Reading {
    let mut head = [0u8; 28];
    if header.read_exact_at(&mut head, 0).is_err() {
        return Reading::Unknown;
    }
    match (head[18], head[19]) {
        (1, 1) => {
            // A rollback-mode writer writes the database file in place while it
            // holds the database exclusively, so its header may show a counter
            // of a transaction that later rolls back. Read it under a shared
            // lock, as SQLite's readers do; a writer holding it gives no reading.
            let Some(_shared) = Gate::try_take(header) else { return Reading::Unknown };
            if header.read_exact_at(&mut head, 0).is_err() {
                return Reading::Unknown;
            }
            match (head[18], head[19]) {
                (1, 1) => Reading::Rollback([head[24], head[25], head[26], head[27]]),
                _ => Reading::Unknown,
            }
        }
        (2, 2) => wal_reading(db, shm).unwrap_or(Reading::Unknown),
        _ => Reading::Unknown,
    }
}

fn wal_reading(db: &Path, handle: &mut ShmHandle) -> Option<Reading> {
    let [_, shm_path] = side_files(db);
    let meta = std::fs::metadata(&shm_path).ok()?;
    let id = FileId::from_metadata(&meta);
    if handle.0.as_ref().is_none_or(|(held, _)| *held != id) {
        // The old descriptor, if any, closes when no connection is open.
        handle.0 = None;
        let file = std::fs::File::open(&shm_path).ok()?;
        if FileId::from_metadata(&file.metadata().ok()?) != id {
            return None;
        }
        handle.0 = Some((id, Held::new(file)));
    }
    let (_, file) = handle.0.as_ref()?;
    let mut header = [0u8; WAL_INDEX_HEADER];
    file.read_exact_at(&mut header, 0).ok()?;
    // "isInit" (offset 12) is 0 while no connection has built the index.
    if header[12] == 0 {
        return None;
    }
    // mxFrame (offset 16, native byte order): the last valid frame.
    let frames = u32::from_ne_bytes([header[16], header[17], header[18], header[19]]);
    if frames > 0 {
        return Some(Reading::Wal { header, empty: None });
    }
    let changed = (meta.ctime(), meta.ctime_nsec());
    let age = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|now| now.checked_sub(Duration::new(u64::try_from(changed.0).ok()?, u32::try_from(changed.1).ok()?)));
    age.is_some_and(|age| age >= RACY).then_some(Reading::Wal { header, empty: Some((id, changed)) })
}

/// What one look at the path finds: which file it names now, and a
/// [`Reading`] of that file; `None` when nothing readable is there.
pub(crate) type Seen = Option<(FileId, Reading)>;

/// Looks at the database without a connection, keeping its own descriptors
/// (see [`crate::source::held`] for when they close): the watch's looks
/// after a commit's event (see [`crate::source::commits`]).
#[derive(Debug)]
pub(crate) struct Looker {
    path: std::path::PathBuf,
    file: Option<(FileId, Arc<Held>)>,
    shm: ShmHandle,
}

impl Looker {
    /// A looker at `path`; nothing is opened until the first look.
    pub(crate) fn new(path: &Path) -> Self {
        Looker { path: path.to_path_buf(), file: None, shm: ShmHandle::default() }
    }

    /// The file at the path and a reading of it, reopening the descriptors
    /// when the path names another file than at the last look.
    pub(crate) fn look(&mut self) -> Seen {
        let Ok(id) = FileId::of(&self.path) else {
            // Nothing is kept on a file that is gone (its directory's watch must hear of it).
            self.file = None;
            self.shm = ShmHandle::default();
            return None;
        };
        if !id.regular {
            return None;
        }
        if self.file.as_ref().is_none_or(|(held, _)| *held != id) {
            self.shm = ShmHandle::default();
            let file = std::fs::File::open(&self.path).ok()?;
            if FileId::from_metadata(&file.metadata().ok()?) != id {
                self.file = None;
                return None;
            }
            self.file = Some((id, Arc::new(Held::new(file))));
        }
        let (_, header) = self.file.as_ref()?;
        Some((id, read(&self.path, header, &mut self.shm)))
    }
}

/// Whether a look that found `now`, after one that found `before`, may have
/// seen a commit: the file changed, or its reading did, or nothing can be
/// said (a [`Reading::Unknown`] is never the same as anything).
pub(crate) fn differs(before: Option<&Seen>, now: &Seen) -> bool {
    match (before, now) {
        (_, Some((_, Reading::Unknown))) | (None, _) => true,
        (Some(before), now) => before != now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(db: &Path, shm: &mut ShmHandle) -> Result<Reading, Box<dyn std::error::Error>> {
        let header = Arc::new(Held::new(std::fs::File::open(db)?));
        Ok(read(db, &header, shm))
    }

    #[test]
    fn a_rollback_commit_changes_the_reading_and_nothing_else_does() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("r.db");
        let w = rusqlite::Connection::open(&db)?;
        w.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
        let mut shm = ShmHandle::default();
        let a = reading(&db, &mut shm)?;
        assert!(matches!(a, Reading::Rollback(_)));
        assert!(reading(&db, &mut shm)?.unchanged_since(&a));
        w.execute_batch("INSERT INTO t VALUES (2);")?;
        assert!(!reading(&db, &mut shm)?.unchanged_since(&a));
        Ok(())
    }

    /// A rollback-mode writer that holds the database exclusively may have
    /// written an uncommitted counter: no reading then.
    #[test]
    fn a_rollback_database_held_exclusively_gives_no_reading() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("x.db");
        let w = rusqlite::Connection::open(&db)?;
        w.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
        let mut shm = ShmHandle::default();
        let before = reading(&db, &mut shm)?;
        w.execute_batch("BEGIN EXCLUSIVE; INSERT INTO t VALUES (2);")?;
        assert_eq!(reading(&db, &mut shm)?, Reading::Unknown);
        w.execute_batch("COMMIT;")?;
        let after = reading(&db, &mut shm)?;
        assert!(matches!(after, Reading::Rollback(_)) && !after.unchanged_since(&before));
        Ok(())
    }

    #[test]
    fn a_wal_commit_changes_the_reading_a_checkpoint_does_not() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("w.db");
        let w = rusqlite::Connection::open(&db)?;
        w.pragma_update(None, "journal_mode", "WAL")?;
        w.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
        let mut shm = ShmHandle::default();
        let a = reading(&db, &mut shm)?;
        assert!(matches!(a, Reading::Wal { empty: None, .. }), "{a:?}");
        assert!(reading(&db, &mut shm)?.unchanged_since(&a));
        w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        let b = reading(&db, &mut shm)?;
        assert!(b.unchanged_since(&a), "a checkpoint is no commit");
        w.execute_batch("INSERT INTO t VALUES (2);")?;
        let c = reading(&db, &mut shm)?;
        assert!(!c.unchanged_since(&b));
        // The WAL restarts after a full checkpoint: the next commit still differs.
        w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        w.execute_batch("INSERT INTO t VALUES (3);")?;
        assert!(!reading(&db, &mut shm)?.unchanged_since(&c));
        Ok(())
    }

    /// An empty WAL's header says nothing about which `-shm` it is in: a
    /// `-shm` changed within [`RACY`] gives no reading.
    #[test]
    fn an_empty_wal_just_made_gives_no_reading() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("e.db");
        {
            let w = rusqlite::Connection::open(&db)?;
            w.pragma_update(None, "journal_mode", "WAL")?;
            w.execute_batch("CREATE TABLE t(x);")?;
        }
        // A reader opens the WAL afresh: an empty WAL in a new -shm.
        let r = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        r.query_row("SELECT count(*) FROM t", [], |_| Ok(()))?;
        let mut shm = ShmHandle::default();
        let a = reading(&db, &mut shm)?;
        assert_eq!(a, Reading::Unknown);
        assert!(!a.unchanged_since(&a), "no reading is ever unchanged");
        Ok(())
    }

    #[test]
    fn a_database_that_is_no_sqlite_file_gives_no_reading() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("n.db");
        std::fs::write(&db, b"not a database")?;
        assert_eq!(reading(&db, &mut ShmHandle::default())?, Reading::Unknown);
        Ok(())
    }
}
