//! What a reader costs the orchestrator (issue: a read-only mirror never gets
//! in the writer's way). In WAL mode nothing: a writer without any busy
//! timeout never fails while the mirror refreshes as fast as it can. In
//! rollback-journal mode each refresh holds a shared lock for its read, so a
//! writer needs a busy timeout longer than the mirror's longest refresh; with
//! one, it never fails either.

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

/// The cost the two tests above avoid, measured: in rollback-journal mode a
/// writer with no busy timeout does fail now and then while the mirror reads
/// (run with `--ignored --nocapture`; how often depends on timing).
#[test]
#[ignore = "a measurement, not a check: prints how many commits failed"]
fn in_rollback_mode_a_writer_without_a_busy_timeout_sometimes_fails() {
    let fx = Fixture::one_of_each();
    let failed = busy_failures(&fx, false, Duration::ZERO, 1000);
    println!("rollback journal, busy timeout 0: {failed} of 1000 commits failed with SQLITE_BUSY");
}
