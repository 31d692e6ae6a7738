//! Change detection: an unchanged database skips the queries; any commit, from
//! any process, is noticed at the next refresh; CPU ticks keep moving.

use crate::support;

use std::time::{Duration, Instant};

use actix::System;
use orchmirror::{MirrorHandle, SectionName};
use support::{Fixture, fast_settings};

async fn sleep(ms: u64) {
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
}

#[test]
fn unchanged_refreshes_skip_the_queries_and_commits_are_noticed() {
    let fx = Fixture::new();
    // A real, busy child whose ticks move while the database does not.
    let mut child = std::process::Command::new("sh").arg("-c").arg("while :; do :; done").spawn().expect("spawn");
    fx.exec(&format!(
        "INSERT INTO jobs (id, agent, status, started_at) VALUES (1, 'dev', 'running', datetime('now'));
         INSERT INTO agent_runs (job_id, agent, pid, started_at) VALUES (1, 'dev', {}, datetime('now'));",
        child.id()
    ));
    let settings = fast_settings(&fx.path);
    System::new().block_on(async move {
        let handle = MirrorHandle::start(&settings).expect("start");
        let start = Instant::now();
        while handle.snapshot().await.map(|e| e.agents().is_none()).unwrap_or(true) {
            assert!(start.elapsed() < Duration::from_secs(10));
            sleep(20).await;
        }
        sleep(1000).await;
        let quiet = handle.refresh_counters();
        // Ten periods without a commit: the queries ran once (maybe twice), the rest were skipped.
        assert!(quiet[SectionName::QUEUE].skipped >= 5, "{quiet:?}");
        assert!(quiet[SectionName::QUEUE].loaded <= 3, "{quiet:?}");
        assert_eq!(quiet[SectionName::QUEUE].failed, 0);

        // The agents section re-samples /proc even when nothing was committed.
        let ticks = |e: &orchmirror::Envelope| e.agents().and_then(|a| a.first()).and_then(|a| a.cpu_ticks);
        let first = ticks(&handle.snapshot().await.expect("on")).expect("ticks");
        let start = Instant::now();
        loop {
            sleep(100).await;
            if ticks(&handle.snapshot().await.expect("on")).is_some_and(|t| t > first) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "ticks never moved");
        }
        let before = handle.refresh_counters();
        assert!(before[SectionName::AGENTS].skipped > 0, "{before:?}");

        // A commit from another connection is noticed at the next refresh.
        fx.exec("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');");
        let start = Instant::now();
        loop {
            let depth = handle.snapshot().await.and_then(|e| e.queue().map(|q| q.depth));
            if depth == Some(1) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "the commit was not noticed");
            sleep(20).await;
        }
        let after = handle.refresh_counters();
        assert!(after[SectionName::QUEUE].loaded > before[SectionName::QUEUE].loaded, "{before:?} -> {after:?}");
        handle.stop();
    });
    let _ = child.kill();
    let _ = child.wait();
}
