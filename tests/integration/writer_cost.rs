//! What a reader costs the orchestrator (issue: a read-only mirror never gets
//! in the writer's way). In WAL mode nothing: a writer without any busy
//! timeout never fails while the mirror refreshes as fast as it can. In
//! rollback-journal mode each refresh holds a shared lock for its read, so a
//! writer needs a busy timeout longer than the mirror's longest refresh; with
//! one, it never fails either. How often a writer without one fails there is
//! a rate, not a check: `scripts/busy-writer.py` measures it.

use crate::support;

use std::time::{Duration, Instant};

use support::{Fixture, Serves};

/// Commits `n` pattern writes (a job queued, then started) while the mirror
/// refreshes every 20 ms; returns how many commits failed.
fn busy_failures(fx: &Fixture, wal: bool, busy_timeout: Duration, n: usize) -> usize {
    let writer = fx.conn();
    if wal {
        writer.pragma_update(None, "journal_mode", "WAL").expect("wal");
    }
    writer.busy_timeout(busy_timeout).expect("busy timeout");
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "20")]);
    bin.wait_all_ok();
    let mut failed = 0;
    let start = Instant::now();
    for i in 0..n {
        let write = writer.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');
             UPDATE jobs SET status = 'running', attempts = attempts + 1 WHERE id = {};
             COMMIT;",
            i / 2 + 1
        ));
        if let Err(e) = write {
            assert!(e.to_string().contains("locked") || e.to_string().contains("busy"), "{e}");
            failed += 1;
            let _ = writer.execute_batch("ROLLBACK");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The mirror was refreshing all along (and saw the writes).
    let m = bin.metrics();
    assert!(support::all_ok(&m), "{}", m["sections"]);
    assert!(start.elapsed() > Duration::from_millis(200), "the writes overlapped many refreshes");
    failed
}

#[test]
fn in_wal_mode_a_writer_without_a_busy_timeout_never_fails() {
    let fx = Fixture::one_of_each();
    assert_eq!(busy_failures(&fx, true, Duration::ZERO, 400), 0);
}

#[test]
fn in_rollback_mode_a_writer_with_a_busy_timeout_never_fails() {
    let fx = Fixture::one_of_each();
    assert_eq!(busy_failures(&fx, false, Duration::from_secs(2), 400), 0);
}

/// A writer's checkpoints beside the mirror (issue 33, item 6; README,
/// "Running beside the orchestrator"): with a busy timeout of 100 ms every
/// `TRUNCATE` checkpoint completes (it waits for the read in progress, a few
/// milliseconds), and each leaves an empty `-wal`, while the mirror refreshes
/// every 20 ms and commits wake it. (Without a busy timeout some answer busy
/// while a read is open; `scripts/checkpoint-beside-mirror.py` measures how
/// many. That is a rate, not checked here.)
#[test]
fn with_a_busy_timeout_every_truncate_checkpoint_completes_beside_the_mirror() {
    let fx = Fixture::one_of_each();
    let writer = fx.conn();
    writer.pragma_update(None, "journal_mode", "WAL").expect("wal");
    writer.pragma_update(None, "wal_autocheckpoint", 0).expect("no automatic checkpoints");
    writer.busy_timeout(Duration::from_millis(100)).expect("busy timeout");
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "20")]);
    bin.wait_all_ok();
    let wal = fx.path.with_file_name(format!("{}-wal", fx.path.file_name().and_then(|n| n.to_str()).unwrap_or("")));
    let mut checkpoints = 0;
    for i in 0..600 {
        writer.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("commit");
        if i % 50 == 49 {
            let (busy, log, done): (i64, i64, i64) = writer
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("checkpoint");
            assert_eq!((busy, log, done), (0, 0, 0), "checkpoint {checkpoints} completed");
            assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0, "and emptied the -wal");
            checkpoints += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(checkpoints, 12);
    let m = bin.metrics();
    assert!(support::all_ok(&m), "the mirror read along: {}", m["sections"]);
}
