//! README, "Freshness and exactness", history edits: changes outside the orchestrator's write
//! pattern (a finished run's cost corrected, rows pruned, a rowid reused,
//! VACUUM) are served right within `ORCH_RECONCILE_MS`, and a reconciliation
//! that finds served values wrong says so (`/health`, the exposition).

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::{Binary, Fixture, Serves, wait_for};

/// The cost aggregate as the plain queries give it now.
fn truth(fx: &Fixture) -> (u64, f64, u64) {
    fx.conn()
        .query_row("SELECT COUNT(*), TOTAL(cost_usd), TOTAL(input_tokens) FROM agent_runs", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get::<_, f64>(2)? as u64))
        })
        .expect("truth")
}

fn served(m: &Value) -> (u64, f64, u64) {
    let a = &m["cost"]["aggregate"];
    (
        a["runs"].as_u64().unwrap_or(0),
        a["cost_usd"].as_f64().unwrap_or(f64::NAN),
        a["input_tokens"].as_u64().unwrap_or(0),
    )
}

fn matches(m: &Value, t: (u64, f64, u64)) -> bool {
    let s = served(m);
    s.0 == t.0 && s.2 == t.2 && (s.1 - t.1).abs() < 1e-6
}

/// Waits until the served aggregate is the database's again.
fn served_right(bin: &Binary, fx: &Fixture, what: &str) {
    let t = truth(fx);
    wait_for(Duration::from_secs(10), what, || matches(&bin.metrics(), t).then_some(()));
}

fn drift(bin: &Binary) -> u64 {
    support::get_json(&bin.url("/health"))["reconciliation"]["cost"]["drift"].as_u64().unwrap_or(0)
}

#[test]
fn history_edits_are_served_right_within_the_reconcile_period() {
    let fx = Fixture::new();
    fx.exec(
        "INSERT INTO jobs (id, agent, status, attempts) VALUES (1, 'dev', 'done', 1), (2, 'dev', 'done', 1),
                (3, 'dev', 'running', 1);
         INSERT INTO agent_runs (id, job_id, agent, finished_at, cost_usd, input_tokens) VALUES
                (1, 1, 'dev', datetime('now'), 1.25, 100), (2, 2, 'dev', datetime('now'), 2.5, 200),
                (3, 3, 'dev', NULL, NULL, NULL);",
    );
    let bin = fx.serve(&[("ORCH_RECONCILE_MS", "1000")]);
    let m = bin.wait_all_ok();
    assert!(matches(&m, truth(&fx)), "{}", m["cost"]);
    let health = support::get_json(&bin.url("/health"));
    assert!(health["reconciliation"]["cost"]["last_at"].is_string(), "{}", health["reconciliation"]);

    // A finished run's cost corrected: the fast path does not re-read finished runs.
    fx.exec("UPDATE agent_runs SET cost_usd = 7.75, input_tokens = 700 WHERE id = 1;");
    served_right(&bin, &fx, "the corrected cost");
    wait_for(Duration::from_secs(10), "the drift to be counted", || (drift(&bin) >= 1).then_some(()));

    // Finished runs pruned (retention), the newest kept.
    fx.exec("DELETE FROM agent_runs WHERE id = 2;");
    served_right(&bin, &fx, "the pruned run gone");

    // A pattern write, then the newest run deleted and its rowid reused by another.
    fx.exec("INSERT INTO agent_runs (id, job_id, agent, finished_at, cost_usd, input_tokens) VALUES (4, 3, 'dev', datetime('now'), 1.0, 10);");
    served_right(&bin, &fx, "the new run");
    fx.exec(
        "DELETE FROM agent_runs WHERE id = 4;
         INSERT INTO agent_runs (id, job_id, agent, finished_at, cost_usd, input_tokens) VALUES (4, 3, 'dev', datetime('now'), 3.0, 30);",
    );
    served_right(&bin, &fx, "the reused rowid's values");

    // VACUUM rewrites the file in place: values stay right.
    fx.exec("VACUUM;");
    served_right(&bin, &fx, "the same values after VACUUM");

    let (_, _, text) = support::get(&bin.url("/metrics/prometheus"));
    let drift_line = text.lines().find(|l| l.starts_with(r#"orchmirror_reconcile_drift_total{section="cost"}"#));
    let n: f64 = drift_line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    assert!(n >= 2.0, "the corrected cost and the reused rowid are drift: {drift_line:?}");
    assert!(support::all_ok(&bin.metrics()));
}
