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
//!
//! Seeing the files present is not enough on its own: a writer that closes
//! its last connection an instant after the check removes them, and SQLite's
//! open then creates them anew. SQLite removes them only when the closing
//! connection can take the database's EXCLUSIVE lock (which proves it is the
//! last), so the check holds a read lock on a byte of the shared-lock range
//! ([`Gate`]) from before it looks until this process's new connection holds
//! SQLite's own shared lock, which a WAL connection keeps while it is open.
//! Files seen present then stay present until SQLite has opened them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::source::held::Held;
use std::time::{Duration, Instant};

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

/// Opens the guard refused since start-up, in this process: the side files
/// were missing and would have been created as the wrong owner, or were there
/// already as this process's. Served as `orchmirror_wal_guard_refusals_total`.
static REFUSALS: AtomicU64 = AtomicU64::new(0);

/// How many opens the guard has refused in this process.
pub(crate) fn refusals() -> u64 {
    REFUSALS.load(Ordering::Relaxed)
}

/// Who creates files for this process: the filesystem uid and gid, and the
/// groups it belongs to (Linux).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Creator {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Creator {
    /// This process, read once from `/proc/self/status`; `None` off Linux or
    /// when it cannot be read (then the guard cannot judge and stays out of the way).
    pub(crate) fn this_process() -> Option<&'static Creator> {
        static ME: OnceLock<Option<Creator>> = OnceLock::new();
        ME.get_or_init(|| {
            #[cfg(target_os = "linux")]
            {
                let status = procfs::process::Process::myself().and_then(|p| p.status()).ok()?;
                let mut groups = status.groups.clone();
                groups.push(status.fgid);
                Some(Creator { uid: status.fuid, gid: status.fgid, groups })
            }
            #[cfg(not(target_os = "linux"))]
            None
        })
        .as_ref()
    }

    /// Whether this process may create files in `dir`, judged from its mode,
    /// owner and group. `None` when that cannot be read (the guard then stays out of the way).
    fn may_create_in(&self, dir: &Path) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).ok()?;
        let mode = meta.mode();
        Some(if self.uid == 0 {
            true
        } else if meta.uid() == self.uid {
            mode & 0o200 != 0
        } else if self.groups.contains(&meta.gid()) {
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

/// The directory a database's side files go in.
fn dir_of(db: &Path) -> &Path {
    db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Whether files this process creates beside `db` belong to the database's
/// owner and group, so that whoever may write the database may write them.
/// Root always qualifies: SQLite hands the files to the database's owner.
fn creates_as_owner(creator: &Creator, db: &Path, db_owner: Owner) -> bool {
    if creator.uid == 0 {
        return true;
    }
    // A new file takes the directory's group when the directory is setgid,
    // else the creator's.
    let group = match std::fs::metadata(dir_of(db)) {
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

/// Where SQLite's unix VFS keeps its locks in the database file (os_unix.c):
/// a shared lock is a read lock on the 510 bytes from `PENDING_BYTE + 2`, an
/// exclusive lock a write lock on all of them.
const SHARED_FIRST: i64 = 0x4000_0000 + 2;
/// The length of that range.
const SHARED_SIZE: i64 = 510;

/// How long the guard waits for a writer that holds the database exclusively
/// (closing its last connection, which takes milliseconds) before the refresh
/// fails and the next one tries again.
const GATE_WAIT: Duration = Duration::from_millis(250);

/// A read lock on the first byte of SQLite's shared-lock range, held from
/// before the guard looks at the side files until this process's new
/// connection holds SQLite's own shared lock (dropping it releases it).
///
/// While it is held no connection can take the EXCLUSIVE lock with which a
/// closing writer removes `-wal` and `-shm`, so files the guard saw stay
/// until SQLite has opened them. It is an open-file-description lock: it
/// conflicts with every other process's locks like SQLite's POSIX ones, but
/// releasing it leaves this process's POSIX locks (SQLite's) in place, which
/// unlocking a POSIX lock on the same byte would not.
pub(crate) struct Gate {
    file: Arc<Held>,
}

impl Gate {
    /// The lock on `file`, waiting up to [`GATE_WAIT`] for a writer that holds it
    /// exclusively; `Ok(None)` when the writer still holds it then.
    fn take(file: &Arc<Held>) -> std::io::Result<Option<Gate>> {
        let until = Instant::now() + GATE_WAIT;
        loop {
            match set_lock(file, true) {
                Ok(()) => return Ok(Some(Gate { file: Arc::clone(file) })),
                Err(e) if is_conflict(&e) => {
                    if Instant::now() >= until {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Gate {
    /// The lock on `file` if no writer holds the database exclusively now, without waiting.
    pub(crate) fn try_take(file: &Arc<Held>) -> Option<Gate> {
        set_lock(file, true).ok().map(|()| Gate { file: Arc::clone(file) })
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // Failing to unlock an open file description's read lock cannot
        // happen for a valid descriptor; it is released with the descriptor anyway.
        let _ = set_lock(&self.file, false);
    }
}

/// Takes (`lock`) or releases the gate's read lock on `file`.
#[cfg(target_os = "linux")]
fn set_lock(file: &File, lock: bool) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;
    let kind = if lock { libc::F_RDLCK } else { libc::F_UNLCK };
    let range = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: SHARED_FIRST,
        l_len: 1,
        // Must be 0 for open-file-description locks.
        l_pid: 0,
    };
    fcntl(file, FcntlArg::F_OFD_SETLK(&range)).map(|_| ()).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn set_lock(_file: &File, _lock: bool) -> std::io::Result<()> {
    Ok(())
}

/// Whether a failed lock means another process holds a conflicting one.
fn is_conflict(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::libc;
        matches!(e.raw_os_error(), Some(libc::EACCES | libc::EAGAIN))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
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

/// Side files that belong to this process's uid, not the database's owner:
/// left by an older reader, they keep the orchestrator from writing.
#[derive(Debug, thiserror::Error)]
#[error(
    "{files} beside {name} belong{s} to uid {creator_uid} (this process), not to the database's owner \
     (uid {owner_uid}), so the orchestrator cannot write {them}; the mirror does not open the database \
     in that state. Remove {them} while no writer has the database open, or chown {them} to uid {owner_uid}",
    s = if files.contains(" and ") { "" } else { "s" },
    them = if files.contains(" and ") { "them" } else { "it" },
)]
pub(crate) struct Foreign {
    files: String,
    name: String,
    creator_uid: u32,
    owner_uid: u32,
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
    /// The side files are there, but as this process's, not the writer's.
    #[error(transparent)]
    Foreign(#[from] Foreign),
    /// A writer held the database exclusively for longer than the guard waits.
    #[error("{0} is held exclusively by a writer (closing or changing its journal mode); trying again")]
    Busy(String),
    /// The database or its directory could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What [`check_before_open`] found safe.
pub(crate) struct Cleared {
    /// Held until the new connection's first read has taken SQLite's shared
    /// lock (for a WAL database this process must not create files for).
    pub(crate) gate: Option<Gate>,
}

/// Checks, before this process's new connection to `db` first reads, that the
/// read cannot create a `-wal` or `-shm` its owner cannot write.
/// `header` is a descriptor on the database file, used to read its header
/// and hold the gate (see [`is_wal`] and [`Gate`]).
pub(crate) fn check_before_open(db: &Path, header: &Arc<Held>) -> Result<Cleared, WouldCreateOrIo> {
    let refused = |e: WouldCreateOrIo| {
        if !matches!(e, WouldCreateOrIo::Io(_) | WouldCreateOrIo::Busy(_)) {
            REFUSALS.fetch_add(1, Ordering::Relaxed);
        }
        e
    };
    let Some(creator) = Creator::this_process() else { return Ok(Cleared { gate: None }) };
    let meta = std::fs::metadata(db)?;
    let db_owner = owner(&meta);
    let as_owner = creates_as_owner(creator, db, db_owner);
    let may_create = creator.may_create_in(dir_of(db)).unwrap_or(true);
    if as_owner && may_create {
        return Ok(Cleared { gate: None });
    }
    let file = Arc::clone(header);
    if !is_wal(&file)? {
        return Ok(Cleared { gate: None });
    }
    let Some(gate) = Gate::take(&file)? else { return Err(WouldCreateOrIo::Busy(file_name(db))) };
    let [wal, shm] = side_files(db);
    let (wal_meta, shm_meta) = (std::fs::metadata(&wal), std::fs::metadata(&shm));
    if let (Ok(wal_meta), Ok(shm_meta)) = (&wal_meta, &shm_meta) {
        let ours: Vec<String> = [(&wal, wal_meta), (&shm, shm_meta)]
            .into_iter()
            .filter(|(_, m)| owner(m).uid == creator.uid && creator.uid != db_owner.uid)
            .map(|(f, _)| file_name(f))
            .collect();
        if !ours.is_empty() {
            return Err(refused(WouldCreateOrIo::Foreign(Foreign {
                files: ours.join(" and "),
                name: file_name(db),
                creator_uid: creator.uid,
                owner_uid: db_owner.uid,
            })));
        }
        return Ok(Cleared { gate: Some(gate) });
    }
    drop(gate);
    if !may_create {
        return Err(refused(WouldCreateOrIo::CannotCreate(CannotCreate { name: file_name(db) })));
    }
    Err(refused(WouldCreateOrIo::WouldCreate(WouldCreate {
        name: file_name(db),
        creator_uid: creator.uid,
        owner_uid: db_owner.uid,
    })))
}

/// Whether the last look found a `-wal` left behind (see [`left_behind`]).
static LEFT_BEHIND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the last look, after one of this process's reads, found a
/// non-empty `-wal` beside the database with no connection open on it.
/// Served as `orchmirror_wal_left_behind`.
pub(crate) fn wal_left_behind() -> bool {
    LEFT_BEHIND.load(Ordering::Relaxed)
}

/// Looks, after one of this process's connections closed, for a non-empty
/// `-wal` beside `db` that no connection of any process has open: what a
/// writer leaves when its last close fell within someone's read (or when it
/// crashed). Its commits are safe and reach the database when a writer next
/// opens it, but a file renamed over the path meanwhile would be read with
/// it and damaged. The first look that finds it logs a warning saying so;
/// the look that no longer finds it logs that it is gone. `header` is a
/// descriptor on the database file, used to ask for locks without taking any.
pub(crate) fn look_for_left_behind(db: &Path, header: &File) {
    let [wal, _] = side_files(db);
    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let left = size > 0 && !anyone_has_it_open(header).unwrap_or(true);
    if left && !LEFT_BEHIND.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            db = %db.display(),
            wal_bytes = size,
            "{} ({size} bytes) is beside {} and no connection has the database open (a writer closed while \
             another connection was reading, or crashed). Its commits reach the database when a writer next \
             opens it; until then a file renamed over {} would be read with it and damaged. Before replacing \
             the file, run PRAGMA wal_checkpoint(TRUNCATE) on it as its owner (README, \"Replacing the \
             database while the mirror runs\")",
            file_name(&wal),
            file_name(db),
            file_name(db),
        );
    } else if !left && size == 0 && LEFT_BEHIND.swap(false, Ordering::Relaxed) {
        tracing::info!(db = %db.display(), "the -wal left beside the database is gone");
    } else if !left && size > 0 && LEFT_BEHIND.swap(false, Ordering::Relaxed) {
        tracing::info!(db = %db.display(), "a writer has the database open again: it takes in the -wal left behind");
    }
}

/// Whether any connection, of any process (this one's included), holds a
/// lock in SQLite's shared-lock range of the database: every open WAL
/// connection that has read holds one. Asks without taking a lock.
#[cfg(target_os = "linux")]
fn anyone_has_it_open(file: &File) -> std::io::Result<bool> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;
    let mut range = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: SHARED_FIRST,
        l_len: SHARED_SIZE,
        l_pid: 0,
    };
    fcntl(file, FcntlArg::F_OFD_GETLK(&mut range)).map_err(std::io::Error::from)?;
    Ok(i32::from(range.l_type) != libc::F_UNLCK)
}

#[cfg(not(target_os = "linux"))]
fn anyone_has_it_open(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// After a first read on a new connection: the `-wal`/`-shm` files this
/// process owns although it is not the database's owner. With the gate held
/// across the first read this cannot happen; the check stays as a tripwire
/// (a file system whose locks do not work, say), and the refresh fails with
/// [`Foreign`]'s message rather than serving as if all were well.
pub(crate) fn foreign_side_files(db: &Path) -> Option<String> {
    let creator = Creator::this_process()?;
    let db_owner = std::fs::metadata(db).map(|m| owner(&m)).ok()?;
    if creates_as_owner(creator, db, db_owner) || creator.uid == db_owner.uid {
        return None;
    }
    let ours: Vec<String> = side_files(db)
        .into_iter()
        .filter(|f| std::fs::metadata(f).map(|m| owner(&m).uid == creator.uid).unwrap_or(false))
        .map(|f| file_name(&f))
        .collect();
    if ours.is_empty() {
        return None;
    }
    REFUSALS.fetch_add(1, Ordering::Relaxed);
    Some(
        Foreign { files: ours.join(" and "), name: file_name(db), creator_uid: creator.uid, owner_uid: db_owner.uid }
            .to_string(),
    )
}

#[cfg(test)]
mod tests;
