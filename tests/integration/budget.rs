//! README, "Commit to visible", the CPU budget: under a burst of commits the
//! mirror widens the gap between refreshes to stay within
//! `ORCH_CPU_BUDGET_PERCENT` of one core, `/health` and a gauge say the
//! budget sets the gap, and the values are exact once the burst ends. Real
//! binary, a real writer committing as fast as it can.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orchmirror::tools::pattern::PatternWriter;
use support::{Fixture, get, get_json, wait_for};

/// Refreshes of `section` that ran their queries so far.
fn loads(base: &str, section: &str) -> u64 {
    let (_, _, text) = get(&format!("{base}/metrics/prometheus"));
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{section=\"{section}\"}} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} for {section} in\n{text}"))
    };
    (value("orchmirror_refresh_duration_seconds_count") - value("orchmirror_refresh_skipped_total")) as u64
}

struct Burst {
    loads: u64,
    limiting_seen: bool,
}

/// A writer commits the orchestrator's pattern as fast as it can for
/// `seconds` beside the binary at `budget` percent; then the served queue
/// must equal the database's.
fn burst(budget: &str, seconds: u64) -> Burst {
    let fx = Fixture::new();
    fx.conn().pragma_update(None, "journal_mode", "WAL").expect("wal");
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "1000"), ("ORCH_CPU_BUDGET_PERCENT", budget)]);
    let health = get_json(&format!("{}/health", bin.base));
    assert_eq!(health["budget"]["percent"].as_f64(), budget.parse().ok(), "{health}");
    wait_for(Duration::from_secs(10), "a first load", || (loads(&bin.base, "queue") > 0).then_some(()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, conn) = (Arc::clone(&stop), fx.conn());
        std::thread::spawn(move || {
            let mut w = PatternWriter::new(conn, 11);
            let mut commits = 0u64;
            while !stop.load(Ordering::Relaxed) {
                w.commit().expect("commit");
                commits += 1;
            }
            commits
        })
    };
    let before = loads(&bin.base, "queue");
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut limiting_seen = false;
    while Instant::now() < until {
        let h = get_json(&format!("{}/health", bin.base));
        if h["budget"]["limiting"] == true {
            limiting_seen = true;
            let (_, _, text) = get(&format!("{}/metrics/prometheus", bin.base));
            assert!(text.contains("orchmirror_cpu_budget_limiting 1"), "the gauge says so too");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let loads = loads(&bin.base, "queue") - before;
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().expect("writer");
    assert!(commits > 200, "the writer made only {commits} commits");
    // Exact once the burst ends: within the period and a generous margin.
    let conn = fx.conn();
    let want: std::collections::BTreeMap<String, i64> = {
        let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status").expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    wait_for(Duration::from_secs(10), "the queue served as the database has it", || {
        let m = get_json(&format!("{}/metrics", bin.base));
        let counts = &m["queue"]["counts"];
        want.iter().all(|(status, n)| counts[status].as_i64() == Some(*n)).then_some(())
    });
    Burst { loads, limiting_seen }
}

#[test]
fn a_burst_of_commits_widens_the_gap_to_the_budget_and_ends_exact() {
    let tight = burst("0.1", 3);
    assert!(tight.limiting_seen, "/health never said the budget sets the gap");
    let free = burst("100", 3);
    eprintln!("queue loads in a 3 s burst: {} at 0.1 %, {} at 100 %", tight.loads, free.loads);
    assert!(
        free.loads > 4 * tight.loads.max(1),
        "a 0.1 % budget should load far less often than a whole core: {} vs {}",
        tight.loads,
        free.loads
    );
}
