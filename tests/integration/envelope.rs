//! Every field of the envelope against fixture databases, through the real binary.

use crate::support;

use chrono::{DateTime, Duration as CDuration, Utc};
use serde_json::{Value, json};
use support::{Fixture, Serves, ts};

use support::sqlite_ts;

/// Compares JSON, numbers within 1e-6 (ages are computed, not stored).
fn assert_json_eq(got: &Value, want: &Value, path: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap_or(f64::NAN), w.as_f64().unwrap_or(f64::NAN));
            assert!((g - w).abs() < 1e-6, "{path}: got {g}, want {w}");
        }
        (Value::Object(g), Value::Object(w)) => {
            let gk: Vec<_> = g.keys().collect();
            let wk: Vec<_> = w.keys().collect();
            assert_eq!(gk, wk, "{path}: keys differ");
            for (k, wv) in w {
                assert_json_eq(&g[k], wv, &format!("{path}.{k}"));
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{path}: length differs: got {got}");
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                assert_json_eq(gv, wv, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "{path}"),
    }
}

fn age(generated: DateTime<Utc>, then: DateTime<Utc>) -> f64 {
    (generated - then).num_milliseconds() as f64 / 1000.0
}

#[test]
fn every_field_matches_a_fixture_whose_values_the_test_computes() {
    let fx = Fixture::new();
    // Whole seconds, so SQLite's text form round-trips exactly.
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let t = |secs: i64| now - CDuration::seconds(secs);
    let iso_frac =
        (now - CDuration::milliseconds(30_500)).with_timezone(&chrono::FixedOffset::east_opt(7200).expect("tz"));
    let c = fx.conn();
    // Inserted out of id order: the envelope must order by id.
    c.execute(
        "INSERT INTO tasks (id, work_item_id, repo, stage, updated_at) VALUES
            (5, 'ORCH-5', 'web', 'analysis', ?1),
            (1, 'ORCH-1', 'core', 'review', ?2),
            (2, 'ORCH-2', 'core', 'done', ?2),
            (3, 'ORCH-3', 'core', 'cancelled', ?2),
            (4, 'ORCH-4', NULL, 'develop', ?3)",
        [
            iso_frac.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
            sqlite_ts(t(100)),
            t(50).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ],
    )
    .expect("tasks");
    c.execute_batch(&format!(
        "INSERT INTO jobs (id, task_id, repo, agent, status, attempts, created_at, started_at) VALUES
            (10, 1, 'core', 'analyst',   'queued',  0, '{q300}', NULL),
            (11, 1, 'core', 'analyst',   'queued',  2, '{q200}', NULL),
            (12, 1, 'core', 'developer', 'running', 3, '{q200}', '{s60}'),
            (13, 4, NULL,   'reviewer',  'running', 1, '{q200}', '{s45iso}'),
            (14, 5, 'web',  'tester',    'done',    1, '{q200}', '{s60}'),
            (15, 5, 'web',  'tester',    'failed',  4, '{q200}', '{s60}'),
            (16, 5, 'web',  'tester',    'paused',  1, '{q200}', NULL),
            (17, 5, 'web',  'tester',    'queued',  0, 'soon',   NULL);
         INSERT INTO agent_runs (id, job_id, agent, pid, model, effort, started_at,
                                 cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens) VALUES
            (30, 12, 'developer', NULL, 'old', 'low', '{s60}', 1.5, 100, 10, 5, 1),
            (31, 12, 'developer', NULL, 'm', 'high', '{s60}', NULL, NULL, NULL, NULL, NULL),
            (32, 14, 'tester', NULL, 'm', 'low', '{s60}', 2.25, 1000, NULL, 7, NULL);",
        q300 = sqlite_ts(t(300)),
        q200 = sqlite_ts(t(200)),
        s60 = sqlite_ts(t(60)),
        s45iso = t(45).format("%Y-%m-%dT%H:%M:%S%.3fZ"),
    ))
    .expect("jobs and runs");
    drop(c);

    let bin = fx.serve(&[]);
    let (status, ct, raw) = support::get(&bin.url("/metrics"));
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let _ = raw;
    let m = bin.wait_all_ok();
    let gen_raw = m["generated_at"].as_str().expect("generated_at");
    assert!(
        gen_raw.len() == 20 && gen_raw.ends_with('Z') && gen_raw.as_bytes()[10] == b'T',
        "generated_at is YYYY-MM-DDTHH:MM:SSZ: {gen_raw}"
    );
    let generated = ts(&m["generated_at"]);
    let clk_tck = m["clk_tck"].as_u64().expect("clk_tck on Linux");
    assert!(clk_tck > 0);

    let want = json!({
        "schema_version": 1,
        "generated_at": gen_raw,
        "clk_tck": clk_tck,
        "stages": [
            {"work_item": "ORCH-1", "stage": "review", "age_in_stage_s": age(generated, t(100)), "repo": "core", "task_id": 1},
            {"work_item": "ORCH-4", "stage": "develop", "age_in_stage_s": age(generated, t(50)), "repo": null, "task_id": 4},
            {"work_item": "ORCH-5", "stage": "analysis", "age_in_stage_s": age(generated, now - CDuration::milliseconds(30_500)), "repo": "web", "task_id": 5},
        ],
        "queue": {
            "counts": {"queued": 3, "running": 2, "done": 1, "failed": 1, "cancelled": 0, "paused": 1},
            "depth": 3,
            "oldest_queued_age_s": age(generated, t(300)),
            "retries": {"retried_jobs": 3, "total_retries": 6, "max_attempts": 4},
            "breaker": null, "max_concurrency": null, "poll_interval": null,
        },
        "agents": [
            {"agent": "developer", "run_id": 31, "job_id": 12, "repo": "core", "pid": null,
             "runtime_s": age(generated, t(60)), "model": "m", "effort": "high", "cpu_ticks": null, "cpu_sampled_at": null},
            {"agent": "reviewer", "run_id": null, "job_id": 13, "repo": null, "pid": null,
             "runtime_s": age(generated, t(45)), "model": null, "effort": null, "cpu_ticks": null, "cpu_sampled_at": null},
        ],
        "cost": {
            "running": [
                {"run_id": 31, "job_id": 12, "agent": "developer", "cost_usd": null, "input_tokens": null,
                 "output_tokens": null, "cache_read_tokens": null, "cache_creation_tokens": null},
                {"run_id": null, "job_id": 13, "agent": "reviewer", "cost_usd": null, "input_tokens": null,
                 "output_tokens": null, "cache_read_tokens": null, "cache_creation_tokens": null},
            ],
            "aggregate": {"runs": 3, "cost_usd": 3.75, "input_tokens": 1100, "output_tokens": 10,
                          "cache_read_tokens": 12, "cache_creation_tokens": 1},
        },
        "sections": m["sections"].clone(),
    });
    assert_json_eq(&m, &want, "$");

    for s in support::SECTIONS {
        let sec = &m["sections"][s];
        assert_eq!(sec["status"], "ok", "{s}");
        assert_eq!(sec["error"], Value::Null, "{s}");
        let refreshed = sec["refreshed_at"].as_str().expect("refreshed_at");
        assert_eq!(refreshed.len(), 24, "milliseconds and Z: {refreshed}");
        let age_ms = sec["age_ms"].as_i64().expect("age_ms");
        // With a 100 ms period the data is young; generous bound for a loaded machine.
        assert!((0..10_000).contains(&age_ms), "{s}: age_ms {age_ms}");
        let keys: Vec<_> = sec.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        let mut sorted = vec!["age_ms", "error", "refreshed_at", "status"];
        sorted.sort();
        assert_eq!(keys, sorted, "{s}: section state keys");
    }
}

#[test]
fn keys_come_in_contract_order() {
    let fx = Fixture::new();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let (_, _, raw) = support::get(&bin.url("/metrics"));
    let order = |keys: &[&str]| {
        let pos: Vec<usize> = keys
            .iter()
            .map(|k| raw.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} missing in {raw}")))
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "keys out of order {keys:?} in {raw}");
    };
    order(&["schema_version", "generated_at", "clk_tck", "stages", "queue", "agents", "cost", "sections"]);
    order(&["counts", "depth", "oldest_queued_age_s", "retries", "breaker", "max_concurrency", "poll_interval"]);
    order(&["queued", "running", "done", "failed", "cancelled"]);
    order(&["retried_jobs", "total_retries", "max_attempts"]);
    let (running, aggregate) = (raw.find("\"running\":["), raw.find("\"aggregate\":"));
    assert!(running.is_some() && running < aggregate, "cost.running before cost.aggregate: {raw}");
    order(&["status", "refreshed_at", "age_ms", "error"]);
}

#[test]
fn an_empty_database_gives_zeros_and_empty_lists_not_nulls() {
    let fx = Fixture::new();
    let bin = fx.serve(&[]);
    let m = bin.wait_all_ok();
    assert_eq!(m["stages"], json!([]));
    assert_eq!(m["agents"], json!([]));
    assert_eq!(
        m["queue"],
        json!({
            "counts": {"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0},
            "depth": 0, "oldest_queued_age_s": null,
            "retries": {"retried_jobs": 0, "total_retries": 0, "max_attempts": 0},
            "breaker": null, "max_concurrency": null, "poll_interval": null,
        })
    );
    assert_eq!(
        m["cost"],
        json!({"running": [], "aggregate": {"runs": 0, "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0,
                                            "cache_read_tokens": 0, "cache_creation_tokens": 0}})
    );
}

#[test]
fn changes_in_the_database_show_up_after_a_refresh() {
    let fx = Fixture::new();
    let bin = fx.serve(&[]);
    assert_eq!(bin.wait_all_ok()["queue"]["depth"], 0);
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('a', 'queued'), ('b', 'queued');");
    support::wait_for(std::time::Duration::from_secs(10), "depth 2", || {
        (bin.metrics()["queue"]["depth"] == 2).then_some(())
    });
}
