//! Unit tests of `commits`.

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

/// The looks wake the sections for what they find: a WAL commit wakes
/// them (once, or twice when the WAL restarts, though its event is
/// followed by seven looks), a
/// checkpoint (it writes the database file) wakes nothing.
#[test]
fn a_commit_wakes_once_and_a_checkpoint_not_at_all() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("k.db");
    let writer = rusqlite::Connection::open(&db)?;
    writer.pragma_update(None, "journal_mode", "WAL")?;
    writer.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    // An empty WAL's reading is trusted only once its -shm is older than RACY.
    std::thread::sleep(RACY + Duration::from_millis(100));
    let wakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&wakes);
    let watch = CommitWatch::start(&db, move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    assert!(watch.mode().on_commit());
    let after_looks = || std::thread::sleep(LOOKS[LOOKS.len() - 1] + Duration::from_millis(300));
    // The first look has nothing to compare with: it may wake.
    writer.execute_batch("INSERT INTO t VALUES (2);")?;
    wait("a wake-up for the first commit", || wakes.load(Ordering::SeqCst) > 0);
    after_looks();
    for round in 0..3 {
        let before = wakes.load(Ordering::SeqCst);
        writer.execute_batch("INSERT INTO t VALUES (3);")?;
        after_looks();
        // A commit after a full checkpoint restarts the WAL, and a look
        // may see the restarted, empty WAL before the commit: two readings.
        let woken = wakes.load(Ordering::SeqCst) - before;
        assert!((1..=2).contains(&woken), "round {round}: one commit, {woken} wake-ups");
        writer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        after_looks();
        assert_eq!(wakes.load(Ordering::SeqCst), before + woken, "round {round}: a checkpoint is no commit");
    }
    Ok(())
}

/// Paced: a burst of commits wakes the sections at most once per pace,
/// and the last wake-up comes after the last commit (none is left unread).
#[test]
fn a_burst_wakes_once_per_pace_and_last_after_its_end() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("p.db");
    let writer = rusqlite::Connection::open(&db)?;
    writer.pragma_update(None, "journal_mode", "WAL")?;
    writer.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (0);")?;
    let wakes = Arc::new(Mutex::new(Vec::new()));
    let noted = Arc::clone(&wakes);
    let pace = Duration::from_millis(300);
    let watch = CommitWatch::paced(
        &db,
        move || pace,
        move || noted.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now()),
    );
    assert!(watch.mode().on_commit());
    let start = Instant::now();
    let mut last_commit = start;
    while start.elapsed() < Duration::from_millis(1500) {
        writer.execute_batch("INSERT INTO t VALUES (1);")?;
        last_commit = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(pace + Duration::from_millis(500));
    let wakes = wakes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // 1.5 s of commits at one wake-up per 300 ms: at most 6 (and the first may have nothing to compare with).
    assert!((2..=7).contains(&wakes.len()), "{} wake-ups", wakes.len());
    for pair in wakes.windows(2) {
        assert!(pair[1] - pair[0] >= pace - Duration::from_millis(5), "wake-ups {:?} apart", pair[1] - pair[0]);
    }
    assert!(wakes.last().is_some_and(|w| *w > last_commit), "a wake-up after the last commit");
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
fn an_overflow_wakes_everything_and_a_removed_directory_is_a_lost_watch() {
    use notify::event::{Flag, RemoveKind};
    let dir = PathBuf::from("/x");
    let names = watched_names(Path::new("/x/o.db"));
    let overflow = notify::Event::new(EventKind::Other).set_flag(Flag::Rescan);
    assert_eq!(meaning(&overflow, &names, std::slice::from_ref(&dir)), Meaning::Overflow);
    let removed = notify::Event::new(EventKind::Remove(RemoveKind::Folder)).add_path(dir.clone());
    assert_eq!(meaning(&removed, &names, std::slice::from_ref(&dir)), Meaning::Lost(dir.clone()));
    let wal = notify::Event::new(EventKind::Create(notify::event::CreateKind::File)).add_path("/x/o.db-wal".into());
    assert_eq!(meaning(&wal, &names, std::slice::from_ref(&dir)), Meaning::Nothing, "a -wal created is no commit");
}

/// The directory deleted and made again: the watch says `timer` and why,
/// then watches the new directory, and its commits wake again.
#[test]
fn a_replaced_directory_is_watched_again() -> Result<(), Box<dyn std::error::Error>> {
    let top = tempfile::tempdir()?;
    let dir = top.path().join("data");
    std::fs::create_dir(&dir)?;
    let db = dir.join("d.db");
    rusqlite::Connection::open(&db)?.execute_batch("CREATE TABLE t(x);")?;
    let wakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&wakes);
    let watch = CommitWatch::start(&db, move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    assert!(watch.mode().on_commit());
    std::fs::remove_dir_all(&dir)?;
    wait("the watch to say it is lost", || !watch.mode().on_commit());
    assert!(watch.mode().reason.is_some_and(|r| r.contains("removed or replaced")));
    std::fs::create_dir(&dir)?;
    let writer = rusqlite::Connection::open(&db)?;
    writer.execute_batch("CREATE TABLE t(x);")?;
    wait("the new directory to be watched", || watch.mode().on_commit());
    let before = wakes.load(Ordering::SeqCst);
    writer.execute_batch("INSERT INTO t VALUES (1);")?;
    wait("a commit in the new directory to wake", || wakes.load(Ordering::SeqCst) > before);
    Ok(())
}

/// A path that is a symbolic link into another directory: SQLite writes
/// the `-wal` beside the file it names, and that is watched too.
#[test]
fn commits_through_a_symbolic_link_wake() -> Result<(), Box<dyn std::error::Error>> {
    let (real, links) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let db = real.path().join("real.db");
    let link = links.path().join("link.db");
    std::os::unix::fs::symlink(&db, &link)?;
    let writer = rusqlite::Connection::open(&db)?;
    writer.pragma_update(None, "journal_mode", "WAL")?;
    writer.execute_batch("CREATE TABLE t(x);")?;
    let wakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&wakes);
    let watch = CommitWatch::start(&link, move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    assert!(watch.mode().on_commit());
    std::thread::sleep(Duration::from_millis(50));
    let before = wakes.load(Ordering::SeqCst);
    writer.execute_batch("INSERT INTO t VALUES (1);")?;
    wait("a commit to the link's target to wake", || wakes.load(Ordering::SeqCst) > before);
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
