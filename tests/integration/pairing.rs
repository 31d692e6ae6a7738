//! README, "The envelope": `cost.running` has exactly the `agents` entries, in the
//! same order, in every envelope, whatever the two sections' periods.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Fixture, Serves};

fn ids(list: &Value, key: &str) -> Vec<Value> {
    list.as_array().map(|l| l.iter().map(|e| e[key].clone()).collect()).unwrap_or_default()
}

#[test]
fn cost_running_pairs_with_agents_whatever_the_periods() {
    let fx = Fixture::new();
    // The README's own example: agents refreshed far more often than cost.
    let bin = fx.serve(&[("ORCH_AGENTS_REFRESH_MS", "100"), ("ORCH_COST_REFRESH_MS", "2000")]);
    bin.wait_all_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (conn, stop) = (fx.conn(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // A job starts with its run; every other time the oldest running one finishes.
                let step = conn.execute_batch(
                    "INSERT INTO jobs (agent, status, started_at) VALUES ('dev', 'running', datetime('now'));
                     INSERT INTO agent_runs (job_id, agent, cost_usd) VALUES (last_insert_rowid(), 'dev', 0.25);",
                );
                let finish = if n.is_multiple_of(2) {
                    conn.execute_batch(
                        "UPDATE jobs SET status = 'done' WHERE id = (SELECT MIN(id) FROM jobs WHERE status = 'running');",
                    )
                } else {
                    Ok(())
                };
                if step.and(finish).is_err() {
                    continue; // busy: try again
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let start = Instant::now();
    let (mut envelopes, mut differing_agents) = (0, 0);
    let mut last_agents = Vec::new();
    while start.elapsed() < Duration::from_secs(6) {
        let m = bin.metrics();
        let agents = &m["agents"];
        let running = &m["cost"]["running"];
        assert_eq!(ids(running, "job_id"), ids(agents, "job_id"), "job ids differ in one envelope: {m}");
        assert_eq!(ids(running, "run_id"), ids(agents, "run_id"), "run ids differ in one envelope: {m}");
        assert_eq!(ids(running, "agent"), ids(agents, "agent"), "agents differ in one envelope: {m}");
        envelopes += 1;
        if ids(agents, "job_id") != last_agents {
            differing_agents += 1;
            last_agents = ids(agents, "job_id");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(envelopes > 50, "only {envelopes} envelopes");
    // The check is only worth something if agents moved many times between two cost refreshes.
    assert!(differing_agents > 10, "agents changed only {differing_agents} times");
}
