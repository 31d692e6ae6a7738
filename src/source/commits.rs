//! Learning of another process's commit as it happens (README, "Commit to visible").
//!
//! SQLite writes a file on every commit: in WAL mode the `-wal` (the
//! `-shm` is written through a mapping and gives no event), in
//! rollback-journal mode the database file itself (and it creates and
//! removes `-journal`). A file-change watch (inotify on Linux, through the
//! `notify` crate) on the database's *directory*, which outlives files that
//! come and go, therefore hears of every commit made on this host within
//! microseconds, and costs nothing while nothing is written. What it hears
//! is only a hint: the section that is woken still compares a reading of the
//! WAL index or change counter (and the file's identity) before it runs its queries, so a
//! spurious wake-up (a checkpoint, a reader opening the file) costs one cheap
//! check, and exactness never depends on the hint.
//!
//! Where a watch cannot work the sections keep their timers and `/health`
//! says why: the directory is on a network file system (a commit from
//! another host gives no event here), the per-user limit on inotify
//! instances or watches is reached, or the watch fails later. The timers run
//! in every case: the period is the longest a section goes without looking.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecursiveMode, Watcher};
use serde::Serialize;

/// How a section learns that it should look at the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WakeMode {
    /// `commit`: a watch on the database's files wakes it on every commit
    /// (and its period bounds the time between looks); `timer`: only its period.
    pub mode: &'static str,
    /// Why it is not woken by commits, or `null`.
    pub reason: Option<String>,
}

impl WakeMode {
    fn commit() -> Self {
        WakeMode { mode: "commit", reason: None }
    }

    pub(crate) fn timer(reason: String) -> Self {
        WakeMode { mode: "timer", reason: Some(reason) }
    }

    /// Whether commits wake the section.
    pub fn on_commit(&self) -> bool {
        self.mode == "commit"
    }
}

/// A watch on the database's directory that calls `wake` on every change to
/// the database's files; dropping it ends the watch.
pub struct CommitWatch {
    _watcher: Option<notify::RecommendedWatcher>,
    mode: Arc<Mutex<WakeMode>>,
}

impl std::fmt::Debug for CommitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitWatch").field("mode", &self.mode()).finish_non_exhaustive()
    }
}

impl CommitWatch {
    /// Watches `db`'s directory, calling `wake` (on the watch's own thread)
    /// for each event that touches the database, its `-wal` or its
    /// `-journal`. It never fails: when a watch cannot work it says why in
    /// [`CommitWatch::mode`] and never calls `wake`.
    pub fn start(db: &Path, wake: impl Fn() + Send + 'static) -> CommitWatch {
        let mode = Arc::new(Mutex::new(WakeMode::commit()));
        let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        if let Some(fs) = network_file_system(&dir) {
            let reason = format!(
                "the database is on a network file system ({fs}): a commit made on another host gives no \
                 file event here, so sections look every period"
            );
            return Self::timer_only(mode, reason);
        }
        let names = watched_names(db);
        let on_error = Arc::clone(&mode);
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                if touches(&event, &names) {
                    wake();
                }
            }
            Err(e) => {
                // An overflowed event queue lost events; others mean the
                // watch no longer works. Either way, wake once and say so.
                wake();
                let mut m = on_error.lock().unwrap_or_else(|p| p.into_inner());
                if m.on_commit() {
                    tracing::warn!(error = %e, "the watch on the database's directory failed; sections look every period");
                    *m = WakeMode::timer(format!("the watch on the database's directory failed: {e}"));
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => return Self::timer_only(mode, format!("cannot watch the database's files: {}", explain(&e))),
        };
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            return Self::timer_only(mode, format!("cannot watch the database's directory: {}", explain(&e)));
        }
        CommitWatch { _watcher: Some(watcher), mode }
    }

    fn timer_only(mode: Arc<Mutex<WakeMode>>, reason: String) -> CommitWatch {
        tracing::warn!(%reason, "sections are not woken by commits");
        *mode.lock().unwrap_or_else(|p| p.into_inner()) = WakeMode::timer(reason);
        CommitWatch { _watcher: None, mode }
    }

    /// How sections are woken now.
    pub fn mode(&self) -> WakeMode {
        self.mode.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The file names whose changes mean a commit (or a new file at the path).
fn watched_names(db: &Path) -> Vec<PathBuf> {
    let with = |suffix: &str| {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    vec![db.to_path_buf(), with("-wal"), with("-journal")]
        .into_iter()
        .filter_map(|p| p.file_name().map(PathBuf::from))
        .collect()
}

/// Whether `event` changed one of the database's files: the database file
/// written, created, removed or renamed, the `-journal` likewise (rollback
/// mode creates and removes it around each commit), the `-wal` written.
/// Opens and closes (every reader's, this process's included) are not
/// changes, nor is a `-wal` created or removed: a connection creates it when
/// it opens the database and the last one removes it as it closes, with no
/// commit. A read woken by those would hold SQLite's shared lock just when a
/// writer that opened, committed and closed wants to remove the `-wal`, and
/// leave it behind (README, "Replacing the database while the mirror runs").
fn touches(event: &notify::Event, names: &[PathBuf]) -> bool {
    use notify::event::ModifyKind;
    let any_change =
        matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any);
    let written = matches!(event.kind, EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) | EventKind::Any);
    // `names` is [database, -wal, -journal] (see `watched_names`).
    event.paths.iter().filter_map(|p| p.file_name()).any(|n| match names.iter().position(|w| w.as_os_str() == n) {
        Some(1) => written,
        Some(_) => any_change,
        None => false,
    })
}

/// The error as an operator can act on it.
fn explain(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => "the limit on inotify watches is reached (fs.inotify.max_user_watches)".into(),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(24) => {
            "the limit on inotify instances is reached (fs.inotify.max_user_instances) or this process is out of file descriptors".into()
        }
        _ => e.to_string(),
    }
}

/// The name of the network file system `dir` is on, if it is on one (Linux).
#[cfg(target_os = "linux")]
fn network_file_system(dir: &Path) -> Option<&'static str> {
    let magic = nix::sys::statfs::statfs(dir).ok()?.filesystem_type().0;
    #[allow(clippy::useless_conversion, reason = "fs_type_t is i64 on x86_64 glibc and narrower elsewhere")]
    network_fs_name(i64::from(magic))
}

#[cfg(not(target_os = "linux"))]
fn network_file_system(_dir: &Path) -> Option<&'static str> {
    None
}

/// File systems whose files another host may write: their changes give no
/// local event. (`statfs(2)`'s magic numbers.)
#[cfg_attr(not(target_os = "linux"), expect(dead_code, reason = "the statfs check is Linux only"))]
fn network_fs_name(magic: i64) -> Option<&'static str> {
    Some(match magic & 0xFFFF_FFFF {
        0x6969 => "NFS",
        0x517B => "SMB",
        0xFF53_4D42 => "CIFS",
        0xFE53_4D42 => "SMB2",
        0x5346_414F => "AFS",
        0x7375_7245 => "Coda",
        0x0102_1997 => "9p",
        0x00C3_6400 => "CephFS",
        0x0BD0_0BD0 => "Lustre",
        0x0116_1970 => "GFS2",
        0x7461_636F => "OCFS2",
        0x6573_5546 => "FUSE (possibly remote)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn wait(what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn commits_wake_in_wal_and_rollback_modes_and_reads_do_not() -> Result<(), Box<dyn std::error::Error>> {
        for wal in [true, false] {
            let dir = tempfile::tempdir()?;
            let db = dir.path().join("c.db");
            let writer = rusqlite::Connection::open(&db)?;
            if wal {
                writer.pragma_update(None, "journal_mode", "WAL")?;
            }
            writer.execute_batch("CREATE TABLE t(x);")?;
            let reader = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            reader.query_row("SELECT count(*) FROM t", [], |_| Ok(()))?;
            let wakes = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&wakes);
            let watch = CommitWatch::start(&db, move || {
                counted.fetch_add(1, Ordering::SeqCst);
            });
            assert_eq!(watch.mode(), WakeMode::commit(), "wal={wal}");

            // Reads (another connection's included) wake nothing.
            for _ in 0..20 {
                reader.query_row("SELECT count(*) FROM t", [], |_| Ok(()))?;
            }
            std::fs::write(dir.path().join("unrelated.txt"), "x")?;
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(wakes.load(Ordering::SeqCst), 0, "wal={wal}: reads and other files are not commits");

            writer.execute_batch("INSERT INTO t VALUES (1);")?;
            wait("a wake-up for the commit", || wakes.load(Ordering::SeqCst) > 0);
        }
        Ok(())
    }

    #[test]
    fn a_file_renamed_over_the_path_wakes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("r.db");
        rusqlite::Connection::open(&db)?.execute_batch("CREATE TABLE t(x);")?;
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&wakes);
        let _watch = CommitWatch::start(&db, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let next = dir.path().join("next.db");
        rusqlite::Connection::open(&next)?.execute_batch("CREATE TABLE u(y);")?;
        std::thread::sleep(Duration::from_millis(100));
        let before = wakes.load(Ordering::SeqCst);
        std::fs::rename(&next, &db)?;
        wait("a wake-up for the new file", || wakes.load(Ordering::SeqCst) > before);
        Ok(())
    }

    #[test]
    fn network_file_systems_are_named_local_ones_are_not() {
        assert_eq!(network_fs_name(0x6969), Some("NFS"));
        assert_eq!(network_fs_name(0xFF53_4D42), Some("CIFS"));
        assert_eq!(network_fs_name(0xEF53), None, "ext4");
        assert_eq!(network_fs_name(0x0102_1994), None, "tmpfs");
        assert_eq!(network_fs_name(0x5846_5342), None, "xfs");
    }
}
