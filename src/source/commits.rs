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

#[cfg(test)]
use crate::source::change::RACY;
use crate::source::change::{Looker, Seen, differs};
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

/// How often a watch that was lost (its directory removed or replaced) tries
/// to watch the directory again.
const REWATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A watch on the database's directory (and, when the path is a symbolic
/// link, on the directory of the file it names, where SQLite writes the
/// `-wal`) that calls `wake` on every change to the database's files;
/// dropping it ends the watch.
pub(crate) struct CommitWatch {
    shared: Arc<Shared>,
}

/// What the watch's event handler and its re-watching thread share.
struct Shared {
    mode: Mutex<WakeMode>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    wake: Box<dyn Fn() + Send + Sync>,
    /// The least time between two wake-ups from the looks (see [`CommitWatch::paced`]).
    pace: Box<dyn Fn() -> std::time::Duration + Send + Sync>,
}

impl Drop for CommitWatch {
    fn drop(&mut self) {
        // Ends the watch; its handler (and the sender the re-watching thread
        // waits on) goes with it, so that thread ends too.
        drop(self.shared.watcher.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

impl std::fmt::Debug for CommitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitWatch").field("mode", &self.mode()).finish_non_exhaustive()
    }
}

/// What an event means for the watch.
#[derive(Debug, PartialEq, Eq)]
enum Meaning {
    /// Nothing for the database.
    Nothing,
    /// A change to one of the database's files.
    Change,
    /// Events were lost (the kernel's queue overflowed): wake everything.
    Overflow,
    /// A watched directory itself was removed or moved: no more events come from it.
    Lost(PathBuf),
}

fn meaning(event: &notify::Event, names: &[PathBuf], dirs: &[PathBuf]) -> Meaning {
    use notify::event::ModifyKind;
    if event.need_rescan() {
        return Meaning::Overflow;
    }
    let gone = matches!(event.kind, EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)));
    if gone && let Some(dir) = event.paths.iter().find(|p| dirs.contains(p)) {
        return Meaning::Lost(dir.clone());
    }
    if touches(event, names) { Meaning::Change } else { Meaning::Nothing }
}

impl CommitWatch {
    /// Watches `db`'s directory, calling `wake` (on the watch's own thread)
    /// for each event that touches the database, its `-wal` or its
    /// `-journal`. It never fails: when a watch cannot work it says why in
    /// [`CommitWatch::mode`] and never calls `wake`. A watch that is lost
    /// later (the directory removed or replaced) says so and is made again
    /// when the directory is back; an overflowed event queue wakes every
    /// section and is logged.
    #[cfg(any(test, feature = "tools", feature = "test-util"))]
    pub(crate) fn start(db: &Path, wake: impl Fn() + Send + Sync + 'static) -> CommitWatch {
        Self::paced(db, || std::time::Duration::ZERO, wake)
    }

    /// As [`CommitWatch::start`], with at least `pace()` between two
    /// wake-ups from the looks: a commit that a look finds sooner wakes the
    /// sections when that time has passed, and the looks rest until then.
    /// A writer committing thousands of times a second then costs the
    /// looks and the sections' wake-ups no more than `1 / pace()` a second
    /// (the mirror passes its coalescing gap, or longer while its CPU budget
    /// is overdrawn: waking a section sooner would only make it wait).
    pub(crate) fn paced(
        db: &Path,
        pace: impl Fn() -> std::time::Duration + Send + Sync + 'static,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> CommitWatch {
        let parent =
            |p: &Path| p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        // SQLite follows a symbolic link and writes the -wal beside the file it names.
        let target = std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf());
        let mut dirs = vec![parent(db)];
        let mut names = watched_names(db);
        if target != db {
            let dir = parent(&target);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
            names.extend(watched_names(&target).into_iter().filter(|n| !names.contains(n)).collect::<Vec<_>>());
        }
        let shared = Arc::new(Shared {
            mode: Mutex::new(WakeMode::commit()),
            watcher: Mutex::new(None),
            wake: Box::new(wake),
            pace: Box::new(pace),
        });
        let watch = CommitWatch { shared: Arc::clone(&shared) };
        if let Some(fs) = dirs.iter().find_map(|d| network_file_system(d)) {
            let reason = format!(
                "the database is on a network file system ({fs}): a commit made on another host gives no \
                 file event here, so sections look every period"
            );
            watch.timer_only(reason);
            return watch;
        }
        let (lost_tx, lost_rx) = std::sync::mpsc::channel::<PathBuf>();
        let looks = start_looks(db, Arc::downgrade(&shared));
        let handler = {
            let shared = Arc::downgrade(&shared);
            let dirs = dirs.clone();
            move |event: notify::Result<notify::Event>| {
                let Some(shared) = shared.upgrade() else { return };
                match event.map(|e| meaning(&e, &names, &dirs)) {
                    Ok(Meaning::Nothing) => {}
                    // Looked at on the looks' thread, which wakes the sections
                    // when it sees the commit (or at once, without that thread).
                    Ok(Meaning::Change) => {
                        if looks.as_ref().is_none_or(|l| l.send(()).is_err()) {
                            (shared.wake)();
                        }
                    }
                    Ok(Meaning::Overflow) => {
                        (shared.wake)();
                        tracing::warn!("the watch's event queue overflowed (events were lost): every section woken");
                    }
                    Ok(Meaning::Lost(dir)) => {
                        (shared.wake)();
                        shared.set(WakeMode::timer(format!(
                            "the database's directory {} was removed or replaced; sections look every period \
                             until it can be watched again",
                            dir.display()
                        )));
                        let _ = lost_tx.send(dir);
                    }
                    Err(e) => {
                        // The watch no longer works: wake once and say so.
                        (shared.wake)();
                        shared.set(WakeMode::timer(format!("the watch on the database's directory failed: {e}")));
                    }
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                watch.timer_only(format!("cannot watch the database's files: {}", explain(&e)));
                return watch;
            }
        };
        for dir in &dirs {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                watch.timer_only(format!("cannot watch the database's directory: {}", explain(&e)));
                return watch;
            }
        }
        *shared.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher);
        let weak = Arc::downgrade(&shared);
        let spawned =
            std::thread::Builder::new().name("orchmirror-rewatch".into()).spawn(move || rewatch(&weak, &lost_rx));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread that watches a lost directory again");
        }
        watch
    }

    fn timer_only(&self, reason: String) {
        tracing::warn!(%reason, "sections are not woken by commits");
        *self.shared.mode.lock().unwrap_or_else(|p| p.into_inner()) = WakeMode::timer(reason);
    }

    /// How sections are woken now.
    pub(crate) fn mode(&self) -> WakeMode {
        self.shared.mode.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Shared {
    /// Sets the mode, logging a change from `commit` to `timer` and back.
    fn set(&self, mode: WakeMode) {
        let mut m = self.mode.lock().unwrap_or_else(|p| p.into_inner());
        match (m.on_commit(), mode.on_commit()) {
            (true, false) => tracing::warn!(reason = ?mode.reason, "sections are no longer woken by commits"),
            (false, true) => tracing::info!("sections are woken by commits again"),
            _ => {}
        }
        *m = mode;
    }
}

/// After an event on the database's files, when the watch looks at the
/// database (from the event), and wakes the sections if a look finds a
/// commit. A WAL commit writes the `-wal` (the event) before it publishes the
/// new frames in the `-shm` (no event), and publishes only after its `fsync`
/// of the `-wal`, which on a busy disk takes tens or hundreds of milliseconds
/// (a commit was seen missed for a whole period after looks that ended at
/// 64 ms): hence looks up to a second. A look reads the WAL-index header or
/// the change counter and the file's identity (see [`crate::source::change`]);
/// it opens no connection. Made once for all the sections, on one thread,
/// a look costs a few system calls; a section is woken only for what a look
/// found, and reads it once its coalescing gap allows.
pub(crate) const LOOKS: [std::time::Duration; 7] = [
    std::time::Duration::ZERO,
    std::time::Duration::from_millis(1),
    std::time::Duration::from_millis(4),
    std::time::Duration::from_millis(16),
    std::time::Duration::from_millis(64),
    std::time::Duration::from_millis(256),
    std::time::Duration::from_millis(1024),
];

/// Starts the thread that makes the [`LOOKS`] after each event it is sent;
/// `None` (the events then wake the sections themselves) when it cannot start.
fn start_looks(db: &Path, shared: std::sync::Weak<Shared>) -> Option<std::sync::mpsc::Sender<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let looker = Looker::new(db);
    let spawned =
        std::thread::Builder::new().name("orchmirror-looks".into()).spawn(move || looks(looker, &rx, &shared));
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the thread that looks for commits; every event wakes the sections");
            None
        }
    }
}

/// The looks' thread: after each event, a look at each of [`LOOKS`] (a new
/// event starts them again); a look that finds a commit (or cannot tell)
/// wakes the sections, or, within the pace of the last wake-up, owes them
/// one, made when the pace has passed (the looks rest meanwhile: the
/// wake-up covers whatever is committed until then). Ends with the watch.
fn looks(mut looker: Looker, events: &std::sync::mpsc::Receiver<()>, shared: &std::sync::Weak<Shared>) {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Instant;
    let mut last: Option<Seen> = None;
    // The last event (or owed wake-up), and how many of its looks were made.
    let mut event: Option<(Instant, usize)> = None;
    let mut woke: Option<Instant> = None;
    // When a wake-up that a look found is owed.
    let mut owed: Option<Instant> = None;
    loop {
        let look = event.and_then(|(at, made)| LOOKS.get(made).map(|d| at + *d));
        let due = owed.or(look);
        let got = match due {
            Some(due) => events.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(()) => {
                while events.try_recv().is_ok() {}
                if owed.is_none() {
                    event = Some((Instant::now(), 0));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let Some(shared) = shared.upgrade() else { return };
        if let Some(at) = owed {
            if at <= now {
                owed = None;
                // The baseline for the next looks: what the woken sections will read.
                last = Some(looker.look());
                (shared.wake)();
                woke = Some(now);
                event = Some((now, 1));
            }
            continue;
        }
        let Some((at, made)) = event.as_mut() else { continue };
        if LOOKS.get(*made).is_none_or(|d| *at + *d > now) {
            continue;
        }
        *made += 1;
        let seen = looker.look();
        let changed = differs(last.as_ref(), &seen);
        last = Some(seen);
        if !changed {
            continue;
        }
        match woke.map(|w| w + (shared.pace)()).filter(|next| *next > now) {
            Some(next) => owed = Some(next),
            None => {
                (shared.wake)();
                woke = Some(now);
            }
        }
    }
}

/// Watches a lost directory again once it is back, until the watch ends.
fn rewatch(shared: &std::sync::Weak<Shared>, lost: &std::sync::mpsc::Receiver<PathBuf>) {
    while let Ok(dir) = lost.recv() {
        loop {
            std::thread::sleep(REWATCH_EVERY);
            let Some(shared) = shared.upgrade() else { return };
            let mut guard = shared.watcher.lock().unwrap_or_else(|p| p.into_inner());
            let Some(watcher) = guard.as_mut() else { return };
            if !dir.is_dir() {
                continue;
            }
            let _ = watcher.unwatch(&dir);
            if watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
                drop(guard);
                shared.set(WakeMode::commit());
                // A commit may have come while nothing watched.
                (shared.wake)();
                break;
            }
        }
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
mod tests;
