//! Bad data degrades one field of one row, never the section.

use crate::support;

use serde_json::{Value, json};
use support::{Binary, Fixture, Serves};

#[test]
fn bad_values_null_only_their_own_field() {
    let fx = Fixture::new();
    // SQLite stores whatever it is given, whatever the declared type.
    fx.exec(
        "INSERT INTO tasks (id, work_item_id, repo, stage, updated_at) VALUES
            (1, 'ORCH-1', 'core', 'review', 'last tuesday'),
            (2, 'ORCH-2', 'core', 'review', '2026-02-30 10:00:00'),
            (3, 'ORCH-3', 'core', 'review', 12345),
            (4, 'ORCH-4', 'core', 'develop', datetime('now', '-10 seconds'));
         INSERT INTO jobs (id, agent, status, attempts, created_at, started_at) VALUES
            (1, 'developer', 'running', 'many', 'garbage', 'not a time'),
            (2, 'developer', 'running', 2, datetime('now', '-20 seconds'), datetime('now', '-5 seconds')),
            (3, 'developer', 'queued', -4, 'garbage', NULL);
         INSERT INTO agent_runs (id, job_id, agent, pid, model, effort, started_at,
                                 cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens) VALUES
            (1, 1, 'developer', 'pid?', 'm', 'high', datetime('now'), 'free', 'lots', -5, 99999999999999999999, 3),
            (2, 2, 'developer', -7, 'm', 'high', datetime('now'), 0.5, 10, 20, 30, 40);",
    );
    let bin = fx.serve(&[]);
    let m = bin.wait_all_ok();

    let stages = m["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 4, "no row is dropped: {m}");
    for s in &stages[..3] {
        assert_eq!(s["age_in_stage_s"], Value::Null, "{s}");
        assert_eq!(s["stage"], "review");
    }
    assert!(stages[3]["age_in_stage_s"].as_f64().is_some_and(|a| a >= 9.0), "{}", stages[3]);

    let agents = m["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 2);
    assert_eq!(agents[0]["runtime_s"], Value::Null);
    assert_eq!(agents[0]["pid"], Value::Null, "text pid");
    assert_eq!(agents[0]["model"], "m", "the rest of the row is served");
    assert_eq!(agents[1]["pid"], Value::Null, "negative pid");
    assert_eq!(agents[1]["cpu_ticks"], Value::Null);
    assert!(agents[1]["runtime_s"].as_f64().is_some());

    let running = &m["cost"]["running"];
    assert_eq!(
        running[0],
        json!({"run_id": 1, "job_id": 1, "agent": "developer", "cost_usd": null, "input_tokens": null,
               "output_tokens": null, "cache_read_tokens": null, "cache_creation_tokens": 3})
    );
    // Aggregates skip what is not a valid number, as they skip NULL.
    assert_eq!(
        m["cost"]["aggregate"],
        json!({"runs": 2, "cost_usd": 0.5, "input_tokens": 10, "output_tokens": 20,
               "cache_read_tokens": 30, "cache_creation_tokens": 43})
    );

    let q = &m["queue"];
    assert_eq!(q["counts"]["running"], 2);
    assert_eq!(q["counts"]["queued"], 1);
    assert_eq!(q["oldest_queued_age_s"], Value::Null, "no queued created_at parses");
    // Only job 2 has a valid attempts value.
    assert_eq!(q["retries"], json!({"retried_jobs": 1, "total_retries": 1, "max_attempts": 2}));
}

#[test]
fn null_where_the_schema_says_not_null_is_unknown_not_an_error() {
    // Built without NOT NULL constraints, as an older or hand-edited database might be.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("loose.sqlite");
    let c = rusqlite::Connection::open(&path).expect("open");
    c.execute_batch(
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY, work_item_id TEXT, repo TEXT, stage TEXT, created_at TEXT, updated_at TEXT);
         CREATE TABLE jobs (id INTEGER PRIMARY KEY, task_id INTEGER, repo TEXT, agent TEXT, status TEXT,
                            attempts INTEGER, created_at TEXT, started_at TEXT, finished_at TEXT);
         CREATE TABLE agent_runs (id INTEGER PRIMARY KEY, job_id INTEGER, agent TEXT, pid INTEGER, model TEXT, effort TEXT,
                            started_at TEXT, finished_at TEXT, cost_usd REAL, input_tokens INTEGER, output_tokens INTEGER,
                            cache_read_tokens INTEGER, cache_creation_tokens INTEGER);
         INSERT INTO tasks (id, work_item_id, stage, updated_at) VALUES (1, NULL, NULL, NULL), (2, 'ORCH-2', 'done', NULL);
         INSERT INTO jobs (id, agent, status, attempts, created_at) VALUES
             (1, NULL, 'running', NULL, NULL), (2, 'dev', NULL, 3, NULL), (3, 'dev', 'queued', 1, NULL);
         INSERT INTO agent_runs (id, job_id, agent, started_at) VALUES (1, 1, NULL, NULL);",
    )
    .expect("loose schema");
    drop(c);
    let db = path.display().to_string();
    let bin = Binary::start(&[("ORCH_DB_PATH", &db), ("ORCH_REFRESH_MS", "100")]);
    let m = bin.wait_all_ok();
    assert_eq!(
        m["stages"],
        json!([{"work_item": null, "stage": null, "age_in_stage_s": null, "repo": null, "task_id": 1}]),
        "a NULL stage is not terminal, so the task is listed"
    );
    assert_eq!(m["agents"][0]["agent"], Value::Null);
    assert_eq!(m["agents"][0]["run_id"], 1);
    assert_eq!(m["agents"][0]["runtime_s"], Value::Null);
    assert_eq!(m["queue"]["counts"]["running"], 1);
    assert_eq!(m["queue"]["counts"]["queued"], 1);
    assert_eq!(m["queue"]["oldest_queued_age_s"], Value::Null);
    assert_eq!(m["queue"]["counts"]["(undecodable)"], 1, "the job with a NULL status is counted: {}", m["queue"]);
    // The job with a NULL status still counts for retries (attempts 3).
    assert_eq!(m["queue"]["retries"], json!({"retried_jobs": 1, "total_retries": 2, "max_attempts": 3}));
}

/// One timestamp parser for SQL and Rust: a date that does not exist, hour 24
/// or a space before the offset is bad data in every age (the queue's oldest
/// queued job is found in SQL, the other ages in Rust); a timestamp more than
/// 1 s after `generated_at` is bad data too, never a negative age.
#[test]
fn timestamps_are_judged_alike_everywhere_and_the_future_has_no_age() {
    let fx = Fixture::new();
    let bad = ["2026-02-31 10:00:00", "2025-02-29 10:00:00", "2026-03-01 24:00:00", "2026-03-01 10:00:00 +05:00"];
    for (i, ts) in bad.iter().enumerate() {
        fx.exec(&format!(
            "INSERT INTO tasks (work_item_id, stage, updated_at) VALUES ('BAD-{i}', 'review', '{ts}');
             INSERT INTO jobs (agent, status, created_at, started_at) VALUES ('dev', 'queued', '{ts}', NULL);
             INSERT INTO jobs (agent, status, started_at) VALUES ('dev', 'running', '{ts}');"
        ));
    }
    fx.exec(
        "INSERT INTO tasks (work_item_id, stage, updated_at) VALUES ('FUTURE', 'review', '9999-12-31 23:59:59');
         INSERT INTO jobs (agent, status, started_at) VALUES ('dev', 'running', datetime('now', '+1 hour'));",
    );
    let bin = fx.serve(&[]);
    let m = bin.wait_all_ok();
    for s in m["stages"].as_array().expect("stages") {
        assert_eq!(s["age_in_stage_s"], Value::Null, "{s}");
    }
    for a in m["agents"].as_array().expect("agents") {
        assert_eq!(a["runtime_s"], Value::Null, "{a}");
    }
    assert_eq!(m["queue"]["counts"]["queued"], 4);
    assert_eq!(m["queue"]["oldest_queued_age_s"], Value::Null, "SQL rejects what Rust rejects: {}", m["queue"]);

    // A valid queued job still gives its age, and a timestamp just ahead is age 0.
    fx.exec(
        "INSERT INTO jobs (agent, status, created_at) VALUES ('dev', 'queued', datetime('now', '-30 seconds'));
         INSERT INTO tasks (work_item_id, stage, updated_at) VALUES ('SOON', 'review', datetime('now'));",
    );
    let m = support::wait_for(std::time::Duration::from_secs(15), "the new rows", || {
        let m = bin.metrics();
        (m["queue"]["counts"]["queued"] == 5 && m["stages"].as_array().is_some_and(|s| s.len() == 6)).then_some(m)
    });
    let age = m["queue"]["oldest_queued_age_s"].as_f64().expect("an age");
    assert!((29.0..=40.0).contains(&age), "{age}");
    let soon = m["stages"].as_array().and_then(|s| s.iter().find(|s| s["work_item"] == "SOON").cloned());
    assert!(soon.is_some_and(|s| s["age_in_stage_s"].as_f64().is_some_and(|a| a >= 0.0)), "{m}");
}

/// Every job is counted somewhere: a status that is not valid UTF-8, a BLOB or
/// NULL is counted under `(undecodable)`, and `counts` adds up to the jobs; an
/// empty stage and an undecodable one stay two series in the exposition.
#[test]
fn undecodable_values_are_counted_and_kept_apart() {
    let fx = Fixture::new();
    fx.exec(
        "INSERT INTO jobs (agent, status) VALUES ('dev', 'queued'), ('dev', CAST(X'C328' AS TEXT)), ('dev', X'00FF');
         INSERT INTO tasks (work_item_id, stage) VALUES ('EMPTY', ''), ('BAD', CAST(X'FFFE' AS TEXT));",
    );
    let bin = fx.serve(&[]);
    let m = bin.wait_all_ok();
    let counts = m["queue"]["counts"].as_object().expect("counts");
    assert_eq!(counts.values().filter_map(Value::as_u64).sum::<u64>(), 3, "{counts:?}");
    assert_eq!(counts["(undecodable)"], 2, "{counts:?}");
    let exposition = support::get(&bin.url("/metrics/prometheus")).2;
    let active: Vec<&str> = exposition.lines().filter(|l| l.starts_with("orch_tasks_active{")).collect();
    assert_eq!(active.len(), 2, "two stages, two series: {active:?}");
    assert!(active.iter().any(|l| l.contains(r#"stage="""#)), "{active:?}");
    assert!(active.iter().any(|l| l.contains(r#"stage="(undecodable)""#)), "{active:?}");
}

/// No row can inflate a response: text longer than 1,024 bytes is cut at a
/// character boundary and ends with `…`, in JSON and in labels.
#[test]
fn long_text_is_cut_at_1024_bytes() {
    let fx = Fixture::new();
    // 'é' is two bytes: 1,024 bytes fall in the middle of one at an odd offset.
    let stage = format!("x{}", "é".repeat(600_000));
    fx.exec(&format!(
        "INSERT INTO tasks (work_item_id, stage) VALUES ('{0}', '{stage}');
         INSERT INTO jobs (agent, status) VALUES ('{0}', 'running');",
        "w".repeat(5_000)
    ));
    let bin = fx.serve(&[]);
    let m = bin.wait_all_ok();
    let served = m["stages"][0]["stage"].as_str().expect("stage");
    assert!(served.ends_with('…'), "ends with an ellipsis");
    let kept = served.trim_end_matches('…');
    assert!(kept.len() <= 1024 && kept.len() >= 1022, "{} bytes kept", kept.len());
    assert!(stage.starts_with(kept), "a prefix of the value, cut at a character boundary");
    assert_eq!(m["stages"][0]["work_item"].as_str().map(str::len), Some(1024 + '…'.len_utf8()));
    assert_eq!(m["agents"][0]["agent"].as_str().map(|a| a.ends_with('…')), Some(true));
    let body = support::get(&bin.url("/metrics")).2;
    assert!(body.len() < 16 * 1024, "the whole envelope stays small: {} bytes", body.len());
    let exposition = support::get(&bin.url("/metrics/prometheus")).2;
    let label = exposition.lines().find(|l| l.starts_with("orch_tasks_active{")).expect("a stage series");
    assert!(label.len() < 1200 && label.contains('…'), "the label is cut too: {} bytes", label.len());
}
