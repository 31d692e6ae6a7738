//! The orchestrator's write pattern (README, "Freshness and exactness"), as a
//! busy orchestrator with a long history commits it: one statement group per
//! commit, touching rows anywhere in history, not only the newest ones. A
//! failed job retried may be years old; a run whose agent crashed is
//! finished long after its job ended; an ended job gets a further run.
//!
//! `tune` measures with it, `examples/pattern_writer.rs` drives the
//! benchmarks' writer (`scripts/commit-cost.py`) with it. Each group is
//! made of the orchestrator's steps ([`crate::tools::orchestrator`]).

use rusqlite::{Connection, OptionalExtension};

use crate::tools::orchestrator::{self as orch, Agent, Ended, RunCost};

/// One statement group of the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// A new task in its first stage.
    NewTask,
    /// An active task's stage moves forward (the last step is `done`).
    Advance,
    /// A new job, queued.
    Enqueue,
    /// `queued → running` with `attempts + 1` and `started_at`; its run is inserted.
    Start,
    /// A running job's latest run finishes with its cost; the job is done or failed.
    Finish,
    /// A running job fails and its run never records an end (an agent that
    /// crashed or was killed): an unfinished run of an ended job.
    Crash,
    /// `failed → queued` for a failed job picked anywhere in history.
    Retry,
    /// `queued ↔ paused`.
    Pause,
    /// `queued | paused → cancelled`.
    Cancel,
    /// An ended job anywhere in history gets a further run (unfinished).
    Rerun,
    /// An unfinished run of an ended job, anywhere in history, finishes with its cost.
    FinishLate,
}

/// Out of 40: how often each group is chosen (the live state stays about
/// the same size: as many jobs start as end, as many are queued as leave).
const WEIGHTS: [(Op, u32); 11] = [
    (Op::NewTask, 2),
    (Op::Advance, 4),
    (Op::Enqueue, 7),
    (Op::Start, 7),
    (Op::Finish, 6),
    (Op::Crash, 1),
    (Op::Retry, 3),
    (Op::Pause, 3),
    (Op::Cancel, 2),
    (Op::Rerun, 2),
    (Op::FinishLate, 3),
];

/// A writer of the pattern on one connection.
#[derive(Debug)]
pub struct PatternWriter {
    conn: Connection,
    rng: fastrand::Rng,
    /// Probes written so far (see [`PatternWriter::probe`]).
    probes: u64,
}

impl PatternWriter {
    /// A writer on `conn` (which must be writable), its choices drawn from `seed`.
    pub fn new(conn: Connection, seed: u64) -> Self {
        Self { conn, rng: fastrand::Rng::with_seed(seed), probes: 0 }
    }

    /// The writer's connection.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A row id from `sql` (one `?1`: a random rowid to start from), or the
    /// first one when none lies above the random start.
    fn anywhere(&mut self, sql: &str, max_sql: &str) -> rusqlite::Result<Option<i64>> {
        let max: i64 = self.conn.query_row(max_sql, [], |r| r.get(0))?;
        let from = self.rng.i64(1..=max.max(1));
        if let Some(id) = self.conn.query_row(sql, [from], |r| r.get(0)).optional()? {
            return Ok(Some(id));
        }
        self.conn.query_row(sql, [0], |r| r.get(0)).optional()
    }

    /// One of the few live rows `sql` lists, at random.
    fn one_of(&mut self, sql: &str) -> rusqlite::Result<Option<i64>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let ids: Vec<i64> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok((!ids.is_empty()).then(|| ids[self.rng.usize(..ids.len())]))
    }

    /// The cost and token columns of a run that ends: usually all set,
    /// sometimes never parsed (NULL).
    fn cost(&mut self) -> RunCost {
        if self.rng.u8(..25) == 0 {
            return RunCost::default();
        }
        let input = self.rng.i64(1_000..200_000);
        let tokens = [input, input / 8, self.rng.i64(0..100_000), self.rng.i64(0..5_000)];
        RunCost { usd: Some(f64::from(self.rng.u32(1..5_000_000)) / 1e6), tokens: tokens.map(Some) }
    }

    /// Commits one statement group chosen at random; returns which (a group
    /// with nothing to act on commits an empty transaction).
    pub fn commit(&mut self) -> rusqlite::Result<Op> {
        let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.u32(..total);
        let op = WEIGHTS
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    return true;
                }
                pick -= w;
                false
            })
            .map_or(Op::Enqueue, |(op, _)| *op);
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match self.apply(op) {
            Ok(()) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(op)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn apply(&mut self, op: Op) -> rusqlite::Result<()> {
        const ACTIVE_TASKS: &str = "SELECT id FROM tasks WHERE stage IN ('analysis', 'develop', 'review', 'test')";
        // A probe stays in its first stage, so a reader timing it can always see it.
        const ADVANCEABLE: &str =
            "SELECT id FROM tasks WHERE stage IN ('analysis', 'develop', 'review', 'test') AND repo IS NOT 'probe'";
        const RUN: Agent<'static> = Agent { pid: None, model: "model-1", effort: "medium" };
        const RERUN: Agent<'static> = Agent { pid: None, model: "model-2", effort: "high" };
        match op {
            Op::NewTask => {
                let item = format!("ORCH-{}", self.rng.u32(..100_000));
                orch::new_task(&self.conn, &item, "repo-1")?;
            }
            Op::Advance => {
                if let Some(task) = self.one_of(ADVANCEABLE)? {
                    orch::advance(&self.conn, task)?;
                }
            }
            Op::Enqueue => {
                let task = self.one_of(ACTIVE_TASKS)?;
                let agent = ["analyst", "developer", "reviewer", "tester"][self.rng.usize(..4)];
                orch::enqueue(&self.conn, task, "repo-1", agent)?;
            }
            Op::Start => {
                if let Some(job) = self.one_of("SELECT id FROM jobs WHERE status = 'queued'")? {
                    orch::start(&self.conn, job, RUN)?;
                }
            }
            Op::Finish | Op::Crash => {
                if let Some(job) = self.one_of("SELECT id FROM jobs WHERE status = 'running'")? {
                    let run: Option<i64> =
                        self.conn.query_row("SELECT MAX(id) FROM agent_runs WHERE job_id = ?1", [job], |r| r.get(0))?;
                    let how = if op == Op::Crash || self.rng.u8(..5) == 0 { Ended::Failed } else { Ended::Done };
                    if let (Some(run), Op::Finish) = (run, op) {
                        let cost = self.cost();
                        orch::finish_run(&self.conn, run, &cost)?;
                    }
                    orch::end(&self.conn, job, how)?;
                }
            }
            Op::Retry => {
                let failed = "SELECT id FROM jobs WHERE status = 'failed' AND id >= ?1 ORDER BY id LIMIT 1";
                if let Some(job) = self.anywhere(failed, "SELECT COALESCE(MAX(id), 0) FROM jobs")? {
                    orch::requeue(&self.conn, job)?;
                }
            }
            Op::Pause => {
                if let Some(job) = self.one_of("SELECT id FROM jobs WHERE status IN ('queued', 'paused')")? {
                    orch::toggle_pause(&self.conn, job)?;
                }
            }
            Op::Cancel => {
                if let Some(job) = self.one_of("SELECT id FROM jobs WHERE status IN ('queued', 'paused')")? {
                    orch::end(&self.conn, job, Ended::Cancelled)?;
                }
            }
            Op::Rerun => {
                let ended = "SELECT id FROM jobs WHERE status = 'done' AND id >= ?1 ORDER BY id LIMIT 1";
                if let Some(job) = self.anywhere(ended, "SELECT COALESCE(MAX(id), 0) FROM jobs")? {
                    orch::add_run(&self.conn, job, RERUN)?;
                }
            }
            Op::FinishLate => {
                let late = "SELECT r.id FROM agent_runs AS r JOIN jobs AS j ON j.id = r.job_id
                     WHERE r.id >= ?1 AND r.finished_at IS NULL AND j.status IN ('done', 'failed', 'cancelled')
                     ORDER BY r.id LIMIT 1";
                if let Some(run) = self.anywhere(late, "SELECT COALESCE(MAX(id), 0) FROM agent_runs")? {
                    let cost = self.cost();
                    orch::finish_run(&self.conn, run, &cost)?;
                }
            }
        }
        Ok(())
    }

    /// Commits a new task named `PROBE-<n>` (n counts from 1) and returns
    /// `n`: a commit whose arrival a reader can tell apart (it appears in
    /// `stages`), for timing commit to visible.
    pub fn probe(&mut self) -> rusqlite::Result<u64> {
        self.probes += 1;
        orch::new_task(&self.conn, &format!("PROBE-{}", self.probes), "probe")?;
        Ok(self.probes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_touches_history_and_keeps_the_live_state_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite");
        crate::tools::generate::generate(&path, &crate::tools::generate::Spec::jobs(5000)).expect("generate");
        let mut w = PatternWriter::new(Connection::open(&path).expect("open"), 3);
        let n = |w: &PatternWriter, sql: &str| w.conn().query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql);
        let late_before = n(&w, "SELECT COUNT(*) FROM agent_runs WHERE finished_at IS NULL AND id < 4000");
        let mut ops = std::collections::HashSet::new();
        for _ in 0..2000 {
            ops.insert(format!("{:?}", w.commit().expect("commit")));
        }
        assert_eq!(ops.len(), WEIGHTS.len(), "every group was chosen: {ops:?}");
        // Old rows were touched: retries and late finishes far from the newest rows.
        assert!(n(&w, "SELECT COUNT(*) FROM jobs WHERE id < 4000 AND status IN ('queued', 'running', 'paused')") > 0);
        assert_ne!(n(&w, "SELECT COUNT(*) FROM agent_runs WHERE finished_at IS NULL AND id < 4000"), late_before);
        assert!(n(&w, "SELECT COUNT(*) FROM jobs WHERE status = 'running'") < 100);
        assert!(n(&w, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'paused')") < 400);
        assert_eq!(w.probe().expect("probe"), 1);
        assert_eq!(n(&w, "SELECT COUNT(*) FROM tasks WHERE work_item_id = 'PROBE-1'"), 1);
    }
}
