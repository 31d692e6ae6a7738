//! README, "Freshness and exactness", "exact under the pattern": after every refresh, what a
//! section's incremental path serves equals the plain queries over all rows on
//! the same read snapshot, whatever sequence of the orchestrator's pattern
//! writes came before. A seeded random workload checks it after every refresh;
//! a failure names its seed and step (`ORCHMIRROR_SEED=n` replays one seed).

use crate::support;

use std::time::Duration;

use orchmirror::Section;
use orchmirror::section::{Cost, Queue, Stages};
use orchmirror::test_util::Database;
use orchmirror::tools::orchestrator::{self as orch, Agent, Ended, RunCost};
use rusqlite::Connection;

/// The orchestrator, writing only as README, "Freshness and exactness"
/// allows: the shared steps (`orchmirror::tools::orchestrator`), each
/// commit one of them, with what a test adds on top in the same commit:
/// stages the steps never write and cost columns holding bad data.
struct Orchestrator {
    conn: Connection,
    rng: fastrand::Rng,
}

impl Orchestrator {
    fn exec(&self, sql: &str, params: impl rusqlite::Params) {
        self.conn.execute(sql, params).unwrap_or_else(|e| panic!("pattern write failed: {e}: {sql}"));
    }

    fn ids(&self, sql: &str) -> Vec<i64> {
        let mut stmt = self.conn.prepare(sql).expect("prepare");
        stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("ids")
    }

    fn pick(&mut self, sql: &str) -> Option<i64> {
        let ids = self.ids(sql);
        (!ids.is_empty()).then(|| ids[self.rng.usize(..ids.len())])
    }

    /// A bad value for a cost or token column, sometimes: NULL, text or a negative number.
    fn bad_value(&mut self) -> Option<rusqlite::types::Value> {
        use rusqlite::types::Value;
        match self.rng.u8(..20) {
            0 => Some(Value::Null),
            1 => Some(Value::Text("n/a".into())),
            2 => Some(Value::Integer(-5)),
            _ => None,
        }
    }

    /// One write of the pattern, chosen at random, committed on its own.
    fn step(&mut self) {
        self.exec("BEGIN IMMEDIATE", []);
        self.write();
        self.exec("COMMIT", []);
    }

    fn write(&mut self) {
        match self.rng.u8(..10) {
            // A new job, queued; sometimes a new task, or a task's stage moving forward.
            0 => drop(ok(orch::enqueue(&self.conn, None, "repo-1", "dev"))),
            1 => match self.rng.u8(..3) {
                0 => {
                    let task = ok(orch::new_task(&self.conn, "W", "repo-1"));
                    // Added: a stage the steps never write (the mirror takes stages as data).
                    let stage = ["backlog", "develop", "analysis"][self.rng.usize(..3)];
                    self.exec("UPDATE tasks SET stage = ?2 WHERE id = ?1", rusqlite::params![task, stage]);
                }
                _ => {
                    if let Some(task) = self.pick("SELECT id FROM tasks WHERE stage NOT IN ('done', 'cancelled')") {
                        if self.rng.bool() {
                            ok(orch::advance(&self.conn, task));
                        } else {
                            // Added: a jump over stages, or a cancelled task.
                            let next = ["review", "test", "done", "cancelled"][self.rng.usize(..4)];
                            self.exec(
                                "UPDATE tasks SET stage = ?2, updated_at = datetime('now') WHERE id = ?1",
                                rusqlite::params![task, next],
                            );
                        }
                    }
                }
            },
            // queued -> running with attempts + 1, and its run starts.
            2 | 3 => {
                if let Some(job) = self.pick("SELECT id FROM jobs WHERE status = 'queued'") {
                    ok(orch::start(&self.conn, job, Agent { pid: Some(4242), model: "m", effort: "low" }));
                }
            }
            // A run finishes (cost and tokens in the same commit); its job, if running, is done or failed.
            4..=6 => {
                if let Some(run) = self.pick("SELECT id FROM agent_runs WHERE finished_at IS NULL") {
                    let dollars = self.rng.u32(..5_000_000) as f64 / 1e6 + 0.1;
                    let tokens = [(); 4].map(|()| Some(self.rng.i64(0..200_000)));
                    ok(orch::finish_run(&self.conn, run, &RunCost { usd: Some(dollars), tokens }));
                    // Added: bad data in some of the columns.
                    for column in
                        ["cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"]
                    {
                        if let Some(bad) = self.bad_value() {
                            let sql = format!("UPDATE agent_runs SET {column} = ?2 WHERE id = ?1");
                            self.exec(&sql, rusqlite::params![run, bad]);
                        }
                    }
                    let running = self.ids(&format!(
                        "SELECT j.id FROM jobs AS j JOIN agent_runs AS r ON r.job_id = j.id
                          WHERE r.id = {run} AND j.status = 'running'"
                    ));
                    if let Some(job) = running.first() {
                        let how = if self.rng.bool() { Ended::Done } else { Ended::Failed };
                        ok(orch::end(&self.conn, *job, how));
                    }
                }
            }
            // failed -> queued (a retry).
            7 => {
                if let Some(job) = self.pick("SELECT id FROM jobs WHERE status = 'failed'") {
                    ok(orch::requeue(&self.conn, job));
                }
            }
            // queued <-> paused.
            8 => {
                if let Some(job) = self.pick("SELECT id FROM jobs WHERE status IN ('queued', 'paused')") {
                    ok(orch::toggle_pause(&self.conn, job));
                }
            }
            // queued | paused -> cancelled.
            _ => {
                if let Some(job) = self.pick("SELECT id FROM jobs WHERE status IN ('queued', 'paused')") {
                    ok(orch::end(&self.conn, job, Ended::Cancelled));
                }
            }
        }
    }
}

fn ok<T>(r: rusqlite::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("pattern step failed: {e}"))
}

fn seeds() -> Vec<u64> {
    match std::env::var("ORCHMIRROR_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => vec![1, 2, 3, 4],
    }
}

/// Runs the workload and checks `section` after every refresh.
fn exact_under_the_pattern<S: Section>(make: impl Fn() -> S) {
    for seed in seeds() {
        let fx = support::Fixture::new();
        let mut orch = Orchestrator { conn: fx.conn(), rng: fastrand::Rng::with_seed(seed) };
        let db = Database::new(&fx.path);
        let section = make();
        let mut writes = 0;
        for step in 0..400 {
            // Several writes between two refreshes, sometimes none.
            for _ in 0..orch.rng.usize(0..8) {
                orch.step();
                writes += 1;
            }
            if orch.rng.u8(..50) == 0 {
                section.forget(); // a reconciliation
            }
            let (fast, full) = db
                .with_conn(Duration::from_secs(30), |conn, _| Ok((section.refresh(conn)?, section.load(conn)?)))
                .unwrap_or_else(|e| panic!("seed {seed}, step {step}: refresh failed: {e}"));
            assert!(
                fast == full,
                "seed {seed}, step {step} ({writes} writes): the incremental {} differs from the full one\n\
                 incremental: {fast:?}\nfull:        {full:?}",
                S::NAME
            );
        }
        assert!(writes > 1000, "seed {seed}: only {writes} pattern writes");
    }
}

#[test]
fn cost_is_exact_under_the_pattern() {
    exact_under_the_pattern(Cost::new);
}

#[test]
fn queue_is_exact_under_the_pattern() {
    exact_under_the_pattern(Queue::new);
}

#[test]
fn stages_are_exact_under_the_pattern() {
    exact_under_the_pattern(|| Stages);
}

/// Refreshes `section` once and checks it against the full queries on the same snapshot.
fn check<S: Section>(db: &Database, section: &S, what: &str) -> S::Data {
    let (fast, full) = db
        .with_conn(Duration::from_secs(30), |conn, _| Ok((section.refresh(conn)?, section.load(conn)?)))
        .unwrap_or_else(|e| panic!("{what}: refresh failed: {e}"));
    assert_eq!(fast, full, "{what}: the incremental {} differs from the full one", S::NAME);
    fast
}

/// A failed job retried, started and failed again, or retried and cancelled,
/// all between two refreshes: nothing in the live set shows it, and the queue
/// must still count its new attempt and its new status.
#[test]
fn queue_sees_failed_jobs_that_move_between_two_refreshes() {
    let fx = support::Fixture::new();
    let conn = fx.conn();
    for _ in 0..6 {
        conn.execute("INSERT INTO jobs (agent, status, attempts) VALUES ('dev', 'failed', 1)", []).expect("job");
    }
    conn.execute("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued')", []).expect("job");
    let db = Database::new(&fx.path);
    let queue = Queue::new();
    check(&db, &queue, "at first");
    let cycles: [(&str, &[&str]); 4] = [
        (
            "failed -> queued -> running -> failed, with its run",
            &[
                "UPDATE jobs SET status = 'queued' WHERE id = 1",
                "UPDATE jobs SET status = 'running', attempts = attempts + 1 WHERE id = 1",
                "INSERT INTO agent_runs (job_id, agent) VALUES (1, 'dev')",
                "UPDATE agent_runs SET finished_at = datetime('now'), cost_usd = 0.5 WHERE job_id = 1",
                "UPDATE jobs SET status = 'failed' WHERE id = 1",
            ],
        ),
        (
            "failed -> queued -> cancelled",
            &["UPDATE jobs SET status = 'queued' WHERE id = 2", "UPDATE jobs SET status = 'cancelled' WHERE id = 2"],
        ),
        (
            "failed -> queued -> running -> done, and another failed -> queued -> paused -> cancelled",
            &[
                "UPDATE jobs SET status = 'queued' WHERE id IN (3, 4)",
                "UPDATE jobs SET status = 'running', attempts = attempts + 1 WHERE id = 3",
                "INSERT INTO agent_runs (job_id, agent) VALUES (3, 'dev')",
                "UPDATE jobs SET status = 'done' WHERE id = 3",
                "UPDATE jobs SET status = 'paused' WHERE id = 4",
                "UPDATE jobs SET status = 'cancelled' WHERE id = 4",
            ],
        ),
        (
            "one failed job cancelled while a queued one starts and fails",
            &[
                "UPDATE jobs SET status = 'queued' WHERE id = 5",
                "UPDATE jobs SET status = 'cancelled' WHERE id = 5",
                "UPDATE jobs SET status = 'running', attempts = attempts + 1 WHERE id = 7",
                "INSERT INTO agent_runs (job_id, agent) VALUES (7, 'dev')",
                "UPDATE jobs SET status = 'failed' WHERE id = 7",
            ],
        ),
    ];
    for (what, writes) in cycles {
        for sql in writes {
            conn.execute(sql, []).unwrap_or_else(|e| panic!("{what}: {sql}: {e}"));
        }
        check(&db, &queue, what);
    }
    // Jobs 1 and 3 were retried; the full queries agree (checked above).
    let data = check(&db, &queue, "at the end");
    assert!(format!("{data:?}").contains("retried_jobs: 2"), "the retries of jobs 1 and 3 are counted: {data:?}");
}

/// Without an `agent_runs` table the queue cannot see starts; it reads the
/// failed jobs again at every refresh and stays exact.
#[test]
fn queue_is_exact_without_agent_runs() {
    let fx = support::Fixture::new();
    let conn = fx.conn();
    conn.execute_batch(
        "DROP TABLE agent_runs;
         INSERT INTO jobs (agent, status, attempts) VALUES ('dev', 'failed', 1), ('dev', 'failed', 2), ('dev', 'done', 1);",
    )
    .expect("schema");
    let db = Database::new(&fx.path);
    let queue = Queue::new();
    check(&db, &queue, "at first");
    conn.execute_batch(
        "UPDATE jobs SET status = 'queued' WHERE id = 1;
         UPDATE jobs SET status = 'running', attempts = attempts + 1 WHERE id = 1;
         UPDATE jobs SET status = 'failed' WHERE id = 1;",
    )
    .expect("cycle");
    let data = check(&db, &queue, "after a retry with no run to show it");
    assert!(format!("{data:?}").contains("retried_jobs: 2"), "both failed jobs are retried now: {data:?}");
}

/// What the fast path of one journal mode was told over a run.
#[derive(Debug, Default)]
struct Told {
    rows: usize,
    unknown: usize,
}

/// The fast path (each refresh told which rows the commits since can have
/// touched, from the `-wal`'s frames) equals the full queries after every
/// refresh, beside a production-like history (failures over the whole of it,
/// unfinished runs of ended jobs) and a writer that touches rows anywhere in
/// it: the orchestrator's statement groups, and the random workload above
/// with its bad values.
fn fast_path_is_exact<S: Section>(make: impl Fn() -> S, wal: bool) -> Told {
    use orchmirror::section::Changes;
    use orchmirror::tools::generate::{Spec, generate};
    use orchmirror::tools::pattern::PatternWriter;
    let mut told = Told::default();
    for seed in seeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.sqlite");
        generate(&path, &Spec::jobs(3000)).expect("generate");
        let conn = Connection::open(&path).expect("open");
        conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
        let mode: String = conn
            .query_row(&format!("PRAGMA journal_mode = {}", if wal { "WAL" } else { "DELETE" }), [], |r| r.get(0))
            .expect("journal mode");
        assert_eq!(mode, if wal { "wal" } else { "delete" });
        let mut writer = PatternWriter::new(conn, seed);
        let mut orch =
            Orchestrator { conn: Connection::open(&path).expect("open"), rng: fastrand::Rng::with_seed(seed) };
        orch.conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
        let db = Database::new(&path);
        let section = make();
        let mut seen: Option<orchmirror::test_util::Fingerprint> = None;
        for step in 0..300 {
            for _ in 0..orch.rng.usize(0..6) {
                if orch.rng.u8(..4) == 0 {
                    orch.step();
                } else {
                    writer.commit().expect("pattern commit");
                }
            }
            let (fast, full, fingerprint, rows) = db
                .with_conn(Duration::from_secs(30), |conn, now| {
                    let changes = seen.map_or(Changes::Unknown, |seen| db.changes_since(&seen, &now));
                    let rows = matches!(changes, Changes::Rows(_));
                    Ok((section.refresh_since(conn, &changes)?, section.load(conn)?, now, rows))
                })
                .unwrap_or_else(|e| panic!("seed {seed}, step {step}: refresh failed: {e}"));
            if seen.is_some() {
                if rows { told.rows += 1 } else { told.unknown += 1 }
            }
            seen = Some(fingerprint);
            assert!(
                fast == full,
                "seed {seed}, step {step}, wal {wal}: the fast {} differs from the full one\nfast: {fast:?}\nfull: {full:?}",
                S::NAME
            );
        }
    }
    told
}

#[test]
fn cost_fast_path_is_exact_in_wal_mode() {
    let told = fast_path_is_exact(Cost::new, true);
    // Told which rows, except after the WAL restarted (a checkpoint reached its end).
    assert!(told.rows > 10 * told.unknown, "{told:?}");
}

#[test]
fn queue_fast_path_is_exact_in_wal_mode() {
    let told = fast_path_is_exact(Queue::new, true);
    assert!(told.rows > 10 * told.unknown, "{told:?}");
}

#[test]
fn fast_paths_are_exact_in_rollback_mode() {
    for told in [fast_path_is_exact(Cost::new, false), fast_path_is_exact(Queue::new, false)] {
        // No frames to read: every followed row is read again.
        assert_eq!(told.rows, 0, "{told:?}");
        assert!(told.unknown > 0);
    }
}

/// The moves that nothing but the changed rows show, each between two
/// refreshes of the fast path in WAL mode: an old failed job retried and
/// cancelled before it started, and an old run of an ended job finished
/// long after (and one deleted: a history edit noticed by key).
#[test]
fn the_fast_path_sees_old_rows_move() {
    use orchmirror::section::Changes;
    use orchmirror::tools::generate::{Spec, generate};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.sqlite");
    generate(&path, &Spec::jobs(3000)).expect("generate");
    let w = Connection::open(&path).expect("open");
    w.pragma_update(None, "journal_mode", "WAL").expect("wal");
    // A WAL with frames: an empty one's header changes salts at the first commit.
    w.execute("INSERT INTO tasks (work_item_id, stage) VALUES ('W', 'develop')", []).expect("insert");
    let db = Database::new(&path);
    let (cost, queue) = (Cost::new(), Queue::new());
    let refresh = |seen: Option<orchmirror::test_util::Fingerprint>, what: &str| {
        db.with_conn(Duration::from_secs(30), |conn, now| {
            let changes = seen.map_or(Changes::Unknown, |seen| db.changes_since(&seen, &now));
            assert_eq!(seen.is_some(), matches!(changes, Changes::Rows(_)), "{what}: {changes:?}");
            assert_eq!(cost.refresh_since(conn, &changes)?, cost.load(conn)?, "{what}: cost");
            assert_eq!(queue.refresh_since(conn, &changes)?, queue.load(conn)?, "{what}: queue");
            Ok(now)
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    let mut seen = refresh(None, "first");
    let one = |sql: &str| w.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql);
    let old_failed = one("SELECT MIN(id) FROM jobs WHERE status = 'failed'");
    w.execute("UPDATE jobs SET status = 'queued' WHERE id = ?1", [old_failed]).expect("retry");
    w.execute("UPDATE jobs SET status = 'cancelled' WHERE id = ?1", [old_failed]).expect("cancel");
    seen = refresh(Some(seen), "a failed job retried and cancelled");
    let late = one("SELECT MIN(r.id) FROM agent_runs AS r JOIN jobs AS j ON j.id = r.job_id
          WHERE r.finished_at IS NULL AND j.status = 'done'");
    w.execute(
        "UPDATE agent_runs SET finished_at = datetime('now'), cost_usd = 2.5, input_tokens = 7 WHERE id = ?1",
        [late],
    )
    .expect("finish late");
    seen = refresh(Some(seen), "a run finished long after its job");
    let gone = one("SELECT MAX(r.id) FROM agent_runs AS r JOIN jobs AS j ON j.id = r.job_id
          WHERE r.finished_at IS NULL AND j.status = 'done'");
    w.execute("DELETE FROM agent_runs WHERE id = ?1", [gone]).expect("delete");
    refresh(Some(seen), "an unfinished run deleted");
}
