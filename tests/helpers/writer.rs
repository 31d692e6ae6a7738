//! A helper process of `tests/integration/wal_ownership.rs`, run as the
//! orchestrator's or the mirror's uid (a bin, built for the tests only:
//! `test-util`). `ORCHMIRROR_TEST_WRITER` names the database (write: commit
//! one queued job, then one more per line on stdin), or `read:` and the
//! database (one plain read-only query), or `loop:` and the database (open,
//! commit, close, again and again until stdin ends).

use std::path::Path;
use std::time::Duration;

const HELPER_ENV: &str = "ORCHMIRROR_TEST_WRITER";

/// The orchestrator's commit here: one job queued (its own write, so one commit).
fn enqueue(c: &rusqlite::Connection) -> rusqlite::Result<i64> {
    orchmirror::tools::orchestrator::enqueue(c, None, "repo-1", "dev")
}

fn main() {
    let Some(arg) = std::env::var_os(HELPER_ENV) else {
        eprintln!("{HELPER_ENV} names the database (see the file's documentation)");
        std::process::exit(2);
    };
    let arg = arg.to_string_lossy().into_owned();
    if let Some(path) = arg.strip_prefix("read:") {
        let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open read-only");
        let n: i64 = c.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)).expect("read");
        println!("reader: {n} jobs");
        return;
    }
    if let Some(path) = arg.strip_prefix("loop:") {
        return write_in_a_loop(Path::new(path));
    }
    let report = |r: rusqlite::Result<()>| match r {
        Ok(()) => println!("writer: committed"),
        Err(e) => println!("writer: failed: {e}"),
    };
    let c = match rusqlite::Connection::open(&arg) {
        Ok(c) => c,
        Err(e) => return println!("writer: failed: {e}"),
    };
    let commit = || enqueue(&c).map(drop);
    report(commit());
    for line in std::io::stdin().lines() {
        if line.is_err() {
            break;
        }
        report(commit());
    }
}

/// The orchestrator as a short-lived-connection writer: open, commit one job,
/// close, again and again until its stdin ends; then one line with the counts
/// and the first failure.
fn write_in_a_loop(path: &Path) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if line.is_err() {
                break;
            }
        }
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    println!("writer: looping");
    let (mut ok, mut failed, mut first) = (0u64, 0u64, None);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let r = rusqlite::Connection::open(path).and_then(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            enqueue(&c).map(drop)
        });
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    println!("writer: done: {ok} committed, {failed} failed, first failure: {first:?}");
}
