//! What a read-only reader of a WAL database must not do: create the `-wal`
//! and `-shm` files its writer then cannot write.
//!
//! Every WAL reader needs both files. When the writer closed last, SQLite
//! removed them, and the next reader's SQLite creates them, owned by that
//! reader (with the database's mode). Only a root reader hands them to the
//! database's owner. A mirror running as another user would therefore leave
//! files the orchestrator cannot open for writing, and every write of the
//! orchestrator fails with "attempt to write a readonly database", even after
//! the mirror exits (a read-only connection cannot remove them). SQLite has no
//! open mode that reads a WAL database without these files (`immutable=1`
//! ignores the WAL and so misses committed data; `readonly_shm=1` still
//! creates the `-wal`), so the mirror checks before it opens: when the files
//! are missing and the files SQLite would create would not belong to the
//! database's owner and group, it does not open, reports why, and tries again
//! at the next refresh, until the writer has put the files in place.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `-wal` and `-shm` files beside a database.
pub(crate) fn side_files(path: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [with("-wal"), with("-shm")]
}

/// The file's name, for messages served to clients (never its directory).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "the database".to_owned())
}

/// Who creates files for this process: the filesystem uid and gid (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Creator {
    uid: u32,
    gid: u32,
}

/// Whether this process may create files in `dir`, judged from its mode,
/// owner and group and the process's uid and groups (supplementary ones
/// included). `None` when that cannot be read (the guard then stays out of the way).
fn may_create_in(dir: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    #[cfg(target_os = "linux")]
    let (uid, groups) = {
        let status = procfs::process::Process::myself().and_then(|p| p.status()).ok()?;
        let mut groups = status.groups.clone();
        groups.push(status.fgid);
        (status.fuid, groups)
    };
    #[cfg(not(target_os = "linux"))]
    return None;
    #[cfg(target_os = "linux")]
    {
        let meta = std::fs::metadata(dir).ok()?;
        let mode = meta.mode();
        Some(if uid == 0 {
            true
        } else if meta.uid() == uid {
            mode & 0o200 != 0
        } else if groups.contains(&meta.gid()) {
            mode & 0o020 != 0
        } else {
            mode & 0o002 != 0
        })
    }
}

/// Why SQLite cannot open a WAL database for this process: it would have to
/// create the `-wal`/`-shm` files, and it cannot write their directory.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} is in WAL mode and its -wal/-shm files are missing (no writer has it open); SQLite must \
     create them beside it even to read, and this process cannot write that directory. Nothing is \
     written to the database itself. Start the orchestrator (its writer creates the files; the \
     mirror reads as soon as they exist), or run the mirror as a user that may write the directory"
)]
pub(crate) struct CannotCreate {
    name: String,
}

impl Creator {
    /// This process, read once from `/proc/self/status`; `None` off Linux or
    /// when it cannot be read (then the guard cannot judge and stays out of the way).
    pub(crate) fn this_process() -> Option<Creator> {
        static ME: OnceLock<Option<Creator>> = OnceLock::new();
        *ME.get_or_init(|| {
            #[cfg(target_os = "linux")]
            {
                let status = procfs::process::Process::myself().and_then(|p| p.status()).ok()?;
                Some(Creator { uid: status.fuid, gid: status.fgid })
            }
            #[cfg(not(target_os = "linux"))]
            None
        })
    }
}

/// Owner, group and mode of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    uid: u32,
    gid: u32,
}

fn owner(meta: &std::fs::Metadata) -> Owner {
    use std::os::unix::fs::MetadataExt;
    Owner { uid: meta.uid(), gid: meta.gid() }
}

/// Whether files this process creates beside `db` belong to the database's
/// owner and group, so that whoever may write the database may write them.
/// Root always qualifies: SQLite hands the files to the database's owner.
fn creates_as_owner(creator: Creator, db: &Path, db_owner: Owner) -> bool {
    if creator.uid == 0 {
        return true;
    }
    // A new file takes the directory's group when the directory is setgid,
    // else the creator's.
    let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let group = match std::fs::metadata(dir) {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            if meta.mode() & 0o2000 != 0 { meta.gid() } else { creator.gid }
        }
        Err(_) => creator.gid,
    };
    creator.uid == db_owner.uid && group == db_owner.gid
}

/// Whether the database file's header says WAL (file format versions 2 at
/// offsets 18 and 19). `header` is a descriptor the caller keeps open: closing
/// any descriptor of a file drops every POSIX lock this process holds on it,
/// SQLite's own included, so it is closed only with the caller's connections.
fn is_wal(header: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut versions = [0u8; 2];
    match header.read_exact_at(&mut versions, 18) {
        Ok(()) => Ok(versions == [2, 2]),
        // Shorter than a header: an empty file, which SQLite reads as an empty database.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why opening the database now would leave files its writer cannot write.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} is in WAL mode and its -wal/-shm files are missing (no writer has it open); \
     a read-only reader would create them as uid {creator_uid}, and the database's owner \
     (uid {owner_uid}) could not write them, so the mirror waits until the writer has opened it"
)]
pub(crate) struct WouldCreate {
    name: String,
    creator_uid: u32,
    owner_uid: u32,
}

/// Checks, before this process's first connection to `db`, that opening it
/// read-only cannot create a `-wal` or `-shm` its owner cannot write.
/// `header` keeps the descriptor used to read the database header (see [`is_wal`]).
pub(crate) fn check_before_open(db: &Path, header: &mut Option<File>) -> Result<(), WouldCreateOrIo> {
    let Some(creator) = Creator::this_process() else { return Ok(()) };
    let [wal, shm] = side_files(db);
    if wal.exists() && shm.exists() {
        return Ok(());
    }
    let meta = std::fs::metadata(db)?;
    let db_owner = owner(&meta);
    let as_owner = creates_as_owner(creator, db, db_owner);
    let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let may_create = may_create_in(dir).unwrap_or(true);
    if as_owner && may_create {
        return Ok(());
    }
    let file = match header {
        Some(f) => f,
        None => header.insert(File::open(db)?),
    };
    if !is_wal(file)? {
        return Ok(());
    }
    if !may_create {
        return Err(WouldCreateOrIo::CannotCreate(CannotCreate { name: file_name(db) }));
    }
    Err(WouldCreateOrIo::WouldCreate(WouldCreate {
        name: file_name(db),
        creator_uid: creator.uid,
        owner_uid: db_owner.uid,
    }))
}

/// A failed check: the open would harm the writer, or the file could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WouldCreateOrIo {
    /// Opening now would create files the writer cannot write.
    #[error(transparent)]
    WouldCreate(#[from] WouldCreate),
    /// Opening needs files this process cannot create.
    #[error(transparent)]
    CannotCreate(#[from] CannotCreate),
    /// The database or its directory could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// After a first read on a new connection: the `-wal`/`-shm` files this
/// process owns although it is not the database's owner. They exist when the
/// writer closed in the instant between the check and SQLite's open (a race
/// no read-only open can close), or were left by an older mirror; the writer
/// cannot write them until they are removed while no writer runs, or given to
/// the database's owner.
pub(crate) fn foreign_side_files(db: &Path) -> Vec<PathBuf> {
    let Some(creator) = Creator::this_process() else { return Vec::new() };
    let Ok(db_owner) = std::fs::metadata(db).map(|m| owner(&m)) else { return Vec::new() };
    if creates_as_owner(creator, db, db_owner) {
        return Vec::new();
    }
    side_files(db)
        .into_iter()
        .filter(|f| std::fs::metadata(f).map(|m| owner(&m).uid == creator.uid).unwrap_or(false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_append_to_the_whole_name() {
        let [wal, shm] = side_files(Path::new("/x/orch.db"));
        assert_eq!(wal, Path::new("/x/orch.db-wal"));
        assert_eq!(shm, Path::new("/x/orch.db-shm"));
    }

    #[test]
    fn the_header_says_wal_only_for_wal_databases() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (wal, rollback, empty) =
            (dir.path().join("wal.db"), dir.path().join("rollback.db"), dir.path().join("empty.db"));
        let c = rusqlite::Connection::open(&wal)?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.execute_batch("CREATE TABLE t(x);")?;
        rusqlite::Connection::open(&rollback)?.execute_batch("CREATE TABLE t(x);")?;
        File::create(&empty)?;
        assert!(is_wal(&File::open(&wal)?)?);
        assert!(!is_wal(&File::open(&rollback)?)?);
        assert!(!is_wal(&File::open(&empty)?)?);
        Ok(())
    }

    #[test]
    fn root_and_the_owner_create_as_the_owner_others_do_not() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("o.db");
        File::create(&db)?;
        let db_owner = Owner { uid: 1000, gid: 1000 };
        assert!(creates_as_owner(Creator { uid: 0, gid: 0 }, &db, db_owner));
        assert!(creates_as_owner(Creator { uid: 1000, gid: 1000 }, &db, db_owner));
        assert!(!creates_as_owner(Creator { uid: 1001, gid: 1000 }, &db, db_owner));
        // The owner with another primary group would give the files that group.
        assert!(!creates_as_owner(Creator { uid: 1000, gid: 1001 }, &db, db_owner));
        Ok(())
    }
}
