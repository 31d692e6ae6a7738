//! The changes-only form of the stream (`/metrics/stream?changes=1`;
//! README, "The stream"), against the real binary: a reader that applies
//! the `change` events as README says, written here from README's words,
//! ends with what `GET /metrics` serves, through churn, reconnections and
//! a resynchronisation; every event matches `docs/change.schema.json`; a
//! change of a few agents' ticks is a small event.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use support::sse::{Event, Stream};
use support::{Binary, Fixture, Serves, wait_for};

const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/change.schema.json");

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(SCHEMA_PATH).expect("schema file")).expect("json");
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc)).expect("a time")
}

/// What a reader of the changes-only form holds: the envelope, and for each
/// section the `generated_at` its value was rendered at.
#[derive(Default)]
struct Replica {
    envelope: Option<Value>,
    rendered_at: HashMap<String, DateTime<Utc>>,
    last_id: Option<String>,
    changes: usize,
    whole: usize,
    resynced: bool,
}

/// README's age rule: `round(x × 1000 + Δ) / 1000` for each named field
/// holding a number, at the top level of `value` and in its rows.
fn move_ages(value: &mut Value, ages: &[String], delta_ms: i64) {
    let move_in = |obj: &mut Map<String, Value>| {
        for f in ages {
            if let Some(x) = obj.get(f).and_then(Value::as_f64) {
                let ms = (x * 1000.0).round() as i64 + delta_ms;
                obj.insert(f.clone(), Value::from(ms as f64 / 1000.0));
            }
        }
    };
    match value {
        Value::Array(rows) => rows.iter_mut().filter_map(Value::as_object_mut).for_each(move_in),
        Value::Object(obj) => {
            move_in(obj);
            for v in obj.values_mut() {
                if let Value::Array(rows) = v {
                    rows.iter_mut().filter_map(Value::as_object_mut).for_each(move_in);
                }
            }
        }
        _ => {}
    }
}

impl Replica {
    fn take(&mut self, ev: &Event) {
        self.last_id = Some(ev.id.clone()).filter(|id| !id.is_empty()).or(self.last_id.take());
        match ev.event.as_str() {
            "envelope" => {
                let env = ev.json();
                let at = time(&env["generated_at"]);
                for name in env["sections"].as_object().expect("sections").keys() {
                    self.rendered_at.insert(name.clone(), at);
                }
                self.envelope = Some(env);
            }
            "change" => self.apply(ev.json()),
            "resync" => self.resynced = true, // an envelope follows
            other => panic!("the changes-only form sent a {other:?} event: {}", ev.data),
        }
    }

    fn apply(&mut self, change: Value) {
        let env = self.envelope.as_mut().expect("an envelope before any change");
        let name = change["section"].as_str().expect("section").to_owned();
        let at = time(&change["generated_at"]);
        env["sections"][&name] = serde_json::json!({
            "status": change["status"], "refreshed_at": change["refreshed_at"],
            "age_ms": change["age_ms"], "error": change["error"],
        });
        self.changes += 1;
        if let Some(data) = change.get("data") {
            env[&name] = data.clone();
            self.rendered_at.insert(name, at);
            self.whole += 1;
            return;
        }
        let value = &mut env[&name];
        let ages: Vec<String> =
            change["ages"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
        let held_at = self.rendered_at[&name];
        move_ages(value, &ages, (at - held_at).num_milliseconds());
        self.rendered_at.insert(name.clone(), at);
        if let Some(set) = change["set"].as_object() {
            for (k, v) in set {
                value[k] = v.clone();
            }
        }
        let Some(rows) = change["rows"].as_object() else { return };
        let key = rows["key"].as_str().expect("key").to_owned();
        let list = match rows.get("at").and_then(Value::as_str) {
            Some(field) => value[field].as_array_mut().expect("rows at the field"),
            None => value.as_array_mut().expect("the value is the rows"),
        };
        let key_of = |r: &Value| r[&key].to_string();
        if let Some(removed) = rows.get("removed").and_then(Value::as_array) {
            let gone: HashSet<String> = removed.iter().map(Value::to_string).collect();
            list.retain(|r| !gone.contains(&key_of(r)));
        }
        if let Some(fill) = rows.get("fill").and_then(Value::as_object) {
            for r in list.iter_mut() {
                for (f, v) in fill {
                    if !r[f].is_null() {
                        r[f] = v.clone();
                    }
                }
            }
        }
        for delta in rows.get("changed").and_then(Value::as_array).into_iter().flatten() {
            let row = list.iter_mut().find(|r| key_of(r) == key_of(delta)).expect("a changed row the reader holds");
            for (f, v) in delta.as_object().expect("a row") {
                row[f] = v.clone();
            }
        }
        list.extend(rows.get("added").and_then(Value::as_array).into_iter().flatten().cloned());
        if let Some(order) = rows.get("order").and_then(Value::as_array) {
            let mut by_key: HashMap<String, Value> = list.drain(..).map(|r| (key_of(&r), r)).collect();
            list.extend(order.iter().map(|k| by_key.remove(&k.to_string()).expect("a row for every key in order")));
        }
    }

    /// Each section's value moved on to `generated_at` by the age rule.
    fn at(&self, generated_at: DateTime<Utc>, sections: &[&str]) -> Map<String, Value> {
        let env = self.envelope.as_ref().expect("an envelope");
        sections
            .iter()
            .map(|name| {
                let mut v = env[*name].clone();
                let ages: Vec<String> =
                    ["runtime_s", "age_in_stage_s", "oldest_queued_age_s"].iter().map(|s| s.to_string()).collect();
                move_ages(&mut v, &ages, (generated_at - self.rendered_at[*name]).num_milliseconds());
                (name.to_string(), v)
            })
            .collect()
    }
}

/// Agents with real processes: most asleep, `busy` of them burning CPU so their ticks move.
fn agents(fx: &Fixture, sleeping: usize, busy: usize) -> Vec<std::process::Child> {
    let now = support::sqlite_ts(Utc::now());
    let mut children = Vec::new();
    let conn = fx.conn();
    for i in 0..sleeping + busy {
        let script = if i < busy { "while :; do :; done" } else { "sleep 600" };
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn an agent process");
        conn.execute(
            "INSERT INTO jobs (agent, repo, status, attempts, started_at) VALUES ('developer', 'core', 'running', 1, ?1)",
            [&now],
        )
        .expect("job");
        let job = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO agent_runs (job_id, agent, pid, model, effort, started_at) VALUES (?1, 'developer', ?2, 'm', 'low', ?3)",
            rusqlite::params![job, child.id(), now],
        )
        .expect("run");
        children.push(child);
    }
    children
}

fn kill_all(children: &mut Vec<std::process::Child>) {
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    children.clear();
}

/// Reads `stream` into `replica` for `window`, checking every change event against the schema.
fn follow(stream: &mut Stream, replica: &mut Replica, window: Duration, schema: &jsonschema::Validator) {
    let until = Instant::now() + window;
    while let Some(ev) = stream.next(until.saturating_duration_since(Instant::now())) {
        if ev.event == "change" {
            let errors: Vec<String> = schema.iter_errors(&ev.json()).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "a change event does not match docs/change.schema.json: {errors:?}\n{}",
                ev.data
            );
        }
        replica.take(&ev);
        if Instant::now() >= until {
            break;
        }
    }
}

const SECTIONS: [&str; 4] = ["stages", "queue", "agents", "cost"];

#[test]
fn a_reader_applying_changes_ends_with_what_metrics_serves_through_churn_resumes_and_a_resync() {
    let schema = validator();
    let fx = Fixture::new();
    fx.exec(
        "PRAGMA journal_mode = WAL;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8000)
         INSERT INTO tasks (work_item_id, repo, stage, updated_at)
         SELECT 'ORCH-' || i, 'core', 'review', datetime('now', '-' || i || ' seconds') FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO jobs (agent, repo, status, attempts, created_at, finished_at)
         SELECT 'dev', 'core', CASE i % 5 WHEN 0 THEN 'failed' ELSE 'done' END, 1 + i % 3,
                datetime('now', '-1 hour'), datetime('now', '-30 minutes') FROM n;",
    );
    let mut children = agents(&fx, 30, 3);
    // No CPU budget: the refreshes keep up with the writer, so the slow reader's events pile up.
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "100"), ("ORCH_CPU_BUDGET_PERCENT", "100")]);
    bin.wait_all_ok();

    // The orchestrator: the write pattern, 50 commits a second, and now and
    // then every active task touched at once (a change too big to send as one).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bulk = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, bulk, conn) = (stop.clone(), bulk.clone(), fx.conn());
        std::thread::spawn(move || {
            let mut w = orchmirror::tools::pattern::PatternWriter::new(conn, 11);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                w.commit().expect("a pattern commit");
                if bulk.load(std::sync::atomic::Ordering::SeqCst) && n.is_multiple_of(5) {
                    w.conn()
                        .execute(
                            "UPDATE tasks SET updated_at = datetime('now', '-' || (abs(random()) % 600) || ' seconds')
                              WHERE stage = 'review'",
                            [],
                        )
                        .expect("touch every task");
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut replica = Replica::default();
    let mut stream = Stream::open_target(bin.port, "/metrics/stream?changes=1", None, false, None, &[]);
    follow(&mut stream, &mut replica, Duration::from_secs(2), &schema);
    // Reconnections: with the last cursor (every section comes whole), and once with a bogus one (an envelope).
    for round in 0..4 {
        drop(stream);
        std::thread::sleep(Duration::from_millis(300));
        let id = if round == 2 { Some("bogus".to_owned()) } else { replica.last_id.clone() };
        stream = Stream::open_target(bin.port, "/metrics/stream?changes=1", id.as_deref(), false, None, &[]);
        follow(&mut stream, &mut replica, Duration::from_secs(1), &schema);
    }
    // A reader that stops reading while large changes come: it is resynchronised.
    let mut slow = Stream::open_target(bin.port, "/metrics/stream?changes=1", None, false, Some(4096), &[]);
    let mut slow_replica = Replica::default();
    follow(&mut slow, &mut slow_replica, Duration::from_millis(500), &schema);
    slow.pause(true);
    bulk.store(true, std::sync::atomic::Ordering::SeqCst);
    let resyncs = || support::get_json(&bin.url("/health"))["streams"]["resyncs"].as_u64().unwrap_or(0);
    let paused = Instant::now();
    while resyncs() == 0 {
        // Well within the 30 s write timeout that would disconnect the slow reader.
        assert!(paused.elapsed() < Duration::from_secs(20), "the slow reader was never resynchronised");
        follow(&mut stream, &mut replica, Duration::from_secs(1), &schema);
    }
    bulk.store(false, std::sync::atomic::Ordering::SeqCst);
    slow.pause(false);
    follow(&mut slow, &mut slow_replica, Duration::from_secs(2), &schema);
    follow(&mut stream, &mut replica, Duration::from_secs(1), &schema);

    // Quiet: no writes, no agent processes (their ticks stop moving).
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    kill_all(&mut children);
    follow(&mut stream, &mut replica, Duration::from_secs(3), &schema);
    follow(&mut slow, &mut slow_replica, Duration::from_secs(2), &schema);
    let metrics = bin.metrics();
    let at = time(&metrics["generated_at"]);
    let served: Map<String, Value> = SECTIONS.iter().map(|s| (s.to_string(), metrics[*s].clone())).collect();
    for (who, r) in [("the reconnecting reader", &replica), ("the resynchronised reader", &slow_replica)] {
        let held = r.at(at, &SECTIONS);
        for s in SECTIONS {
            if held[s] == served[s] {
                continue;
            }
            // The first row (or field) that differs, to say what went wrong.
            let (h, v) = match (&held[s], &served[s]) {
                (Value::Array(h), Value::Array(v)) => {
                    let i = (0..h.len().max(v.len())).find(|i| h.get(*i) != v.get(*i)).unwrap_or(0);
                    (
                        format!("row {i} of {}: {:?}", h.len(), h.get(i)),
                        format!("row {i} of {}: {:?}", v.len(), v.get(i)),
                    )
                }
                (h, v) => (h.to_string(), v.to_string()),
            };
            panic!("{who}'s {s} differs from /metrics:\nheld   {h}\nserved {v}");
        }
    }
    println!("changes followed: {} ({} whole)", replica.changes, replica.whole);
    assert!(replica.changes > 20, "the churn was followed through changes: {}", replica.changes);
    assert!(
        replica.whole < replica.changes / 2,
        "most changes were not whole values: {} of {}",
        replica.whole,
        replica.changes
    );
    assert!(slow_replica.resynced, "the slow reader was sent a resync and a fresh envelope");
    // Every status a section can have is one the schema takes; it rejects what is not a change event.
    for status in ["ok", "stale", "pending", "error", "timeout", "unavailable"] {
        let event = serde_json::json!({"section": "queue", "seq": 3, "status": status, "refreshed_at": null,
            "age_ms": null, "error": null, "generated_at": "2026-01-01T00:00:00Z", "data": null});
        assert!(schema.is_valid(&event), "status {status}");
    }
    assert!(!schema.is_valid(&serde_json::json!({"section": "agents", "seq": 1, "status": "ok"})));
    assert!(!schema.is_valid(&serde_json::json!({"section": "agents", "seq": 1, "status": "ok", "refreshed_at": null,
        "age_ms": null, "error": null, "generated_at": "2026-01-01T00:00:00Z", "data": [], "set": {}})));
}

/// 200 agents, 2 of them busy: a change of their ticks is a small event,
/// though the whole section is tens of kilobytes; the plain stream sends it whole.
#[test]
fn a_tick_only_change_is_a_small_event_and_cost_is_not_sent() {
    let fx = Fixture::new();
    fx.exec("PRAGMA journal_mode = WAL;");
    let mut children = agents(&fx, 198, 2);
    let bin: Binary = fx.serve(&[("ORCH_REFRESH_MS", "250")]);
    wait_for(Duration::from_secs(10), "200 agents with ticks", || {
        let m = bin.metrics();
        (m["agents"].as_array().is_some_and(|a| a.len() == 200 && a.iter().all(|r| r["cpu_ticks"].is_u64())))
            .then_some(())
    });
    let mut changes = Stream::open_target(bin.port, "/metrics/stream?changes=1", None, false, None, &[]);
    let mut plain = Stream::open(bin.port, None);
    let first = changes.next(Duration::from_secs(5)).expect("the envelope");
    assert_eq!(first.event, "envelope");
    let whole_agents = first.json()["agents"].to_string().len();
    assert!(whole_agents > 20_000, "the whole agents section: {whole_agents} bytes");
    let events = changes.collect(Duration::from_secs(3));
    let plain_events = plain.collect(Duration::from_secs(1));
    kill_all(&mut children);
    let agents: Vec<&Event> = events.iter().filter(|e| e.json()["section"] == "agents").collect();
    assert!(agents.len() >= 4, "the ticks moved: {} agents events", agents.len());
    for e in &agents {
        assert_eq!(e.event, "change");
        assert!(e.data.len() < 1_000, "a tick-only change of 2 agents is {} bytes: {}", e.data.len(), e.data);
        assert!(e.json().get("data").is_none(), "not the whole section: {}", e.data);
    }
    assert!(events.iter().all(|e| e.json()["section"] != "cost"), "cost's data did not change");
    let plain_agents = plain_events.iter().find(|e| e.event == "section" && e.json()["section"] == "agents");
    assert!(plain_agents.is_some_and(|e| e.data.len() > whole_agents), "the plain stream sends the whole section");
}
