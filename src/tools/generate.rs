//! A deterministic orchestrator database of any size, for benchmarks, `tune`
//! and tests: 1M jobs in a few seconds, all in SQL.
//!
//! History grows with the size; live state does not (a real orchestrator has
//! tens of active tasks and a handful of running agents whatever its age), so
//! the envelope is the same size at 1k and at 1M jobs.

use std::path::Path;

use rusqlite::{Connection, params};

use crate::{SCHEMA_INDEXES_SQL, SCHEMA_SQL};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Spec {
    /// Number of jobs (tasks: a quarter of that; one agent run per started job).
    pub jobs: u64,
    /// Jobs in `running` (each with a run; no real process behind it).
    pub running: u64,
    /// Jobs in `queued`.
    pub queued: u64,
    /// Tasks not yet done or cancelled.
    pub active_tasks: u64,
    /// Create the production indexes.
    pub indexes: bool,
}

impl Spec {
    /// `jobs` jobs with 10 running, 100 queued, 50 active tasks, indexes on.
    pub fn jobs(jobs: u64) -> Self {
        Self { jobs, running: 10.min(jobs), queued: 100.min(jobs), active_tasks: 50, indexes: true }
    }

    /// The same, with or without the indexes.
    pub fn indexes(self, indexes: bool) -> Self {
        Self { indexes, ..self }
    }

    /// The same, with `running` running jobs.
    pub fn running(self, running: u64) -> Self {
        Self { running, ..self }
    }
}

/// SQLite integers are signed.
fn sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Tasks: history in done and cancelled, the last `?2` active in four stages.
const TASKS_SQL: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
     INSERT INTO tasks (id, work_item_id, repo, stage, created_at, updated_at)
     SELECT i, 'ORCH-' || i, 'repo-' || (i % 7),
            CASE WHEN i > ?1 - ?2 THEN (CASE i % 4 WHEN 0 THEN 'analysis' WHEN 1 THEN 'develop'
                                                    WHEN 2 THEN 'review' ELSE 'test' END)
                 WHEN i % 10 = 0 THEN 'cancelled' ELSE 'done' END,
            datetime('2026-11-01 00:00:00', '+' || (i * 7) || ' seconds'),
            datetime('2026-11-01 00:00:00', '+' || (i * 7 + 600) || ' seconds')
       FROM n";

/// Jobs: the last `?2` run, the `?3` before them wait; the rest is history, some failed or cancelled.
const JOBS_SQL: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
     INSERT INTO jobs (id, task_id, repo, agent, status, attempts, created_at, started_at, finished_at)
     SELECT i, 1 + i % ?4, 'repo-' || (i % 7),
            CASE i % 4 WHEN 0 THEN 'analyst' WHEN 1 THEN 'developer' WHEN 2 THEN 'reviewer' ELSE 'tester' END,
            CASE WHEN i > ?1 - ?2 THEN 'running'
                 WHEN i > ?1 - ?2 - ?3 THEN 'queued'
                 WHEN i % 17 = 0 THEN 'failed'
                 WHEN i % 41 = 0 THEN 'cancelled'
                 ELSE 'done' END,
            CASE WHEN i > ?1 - ?2 - ?3 AND i <= ?1 - ?2 THEN 0
                 ELSE 1 + (i % 7 = 0) + (i % 13 = 0) END,
            datetime('2026-11-01 00:00:00', '+' || (i * 2) || ' seconds'),
            CASE WHEN i > ?1 - ?2 - ?3 AND i <= ?1 - ?2 THEN NULL
                 ELSE datetime('2026-11-01 00:00:00', '+' || (i * 2 + 5) || ' seconds') END,
            CASE WHEN i > ?1 - ?2 - ?3 THEN NULL
                 ELSE datetime('2026-11-01 00:00:00', '+' || (i * 2 + 60) || ' seconds') END
       FROM n";

/// One run per started job, and an earlier failed one for every other retried
/// job (about 1.1 runs per job); costs of finished runs (a few never parsed:
/// NULL). One ended job in 199 kept the run of an agent that crashed or was
/// killed: it never recorded its end (`finished_at` and cost NULL), as a
/// production history has.
const RUNS_SQL: &str = "WITH attempt(n) AS (SELECT 1 UNION ALL SELECT 2),
     runs AS (
       SELECT j.id AS job_id, j.agent, j.status, j.started_at, j.finished_at, a.n,
              (a.n = 2 OR NOT (j.attempts >= 2 AND j.id % 2 = 0)) AS latest
         FROM jobs AS j JOIN attempt AS a
        WHERE j.started_at IS NOT NULL AND (a.n = 2 OR (j.attempts >= 2 AND j.id % 2 = 0))),
     shaped AS (
       SELECT job_id, n, agent,
              CASE WHEN latest THEN started_at ELSE datetime(started_at, '-30 seconds') END AS started_at,
              CASE WHEN NOT latest THEN datetime(started_at, '-10 seconds')
                   WHEN finished_at IS NULL OR job_id % 199 = 0 THEN NULL
                   ELSE finished_at END AS finished_at
         FROM runs)
     INSERT INTO agent_runs (job_id, agent, pid, model, effort, started_at, finished_at,
                             cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens)
     SELECT job_id, agent, NULL, 'model-' || (job_id % 3),
            CASE job_id % 3 WHEN 0 THEN 'low' WHEN 1 THEN 'medium' ELSE 'high' END,
            started_at, finished_at,
            CASE WHEN finished_at IS NULL OR job_id % 23 = 0 THEN NULL ELSE (job_id % 1000) / 100.0 END,
            CASE WHEN finished_at IS NULL OR job_id % 23 = 0 THEN NULL ELSE 1000 + job_id % 50000 END,
            CASE WHEN finished_at IS NULL OR job_id % 23 = 0 THEN NULL ELSE 100 + job_id % 5000 END,
            CASE WHEN finished_at IS NULL OR job_id % 23 = 0 THEN NULL ELSE job_id % 20000 END,
            CASE WHEN finished_at IS NULL OR job_id % 23 = 0 THEN NULL ELSE job_id % 700 END
       FROM shaped ORDER BY job_id, n";

/// Creates the database at `path` (which must not exist) as `spec` says.
pub fn generate(path: &Path, spec: &Spec) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    // A throw-away build: no journal, no fsync.
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    conn.execute_batch(SCHEMA_SQL)?;
    let tasks = (spec.jobs / 4).max(spec.active_tasks).max(1);
    let tx = conn.unchecked_transaction()?;
    tx.execute(TASKS_SQL, params![sql(tasks), sql(spec.active_tasks)])?;
    tx.execute(JOBS_SQL, params![sql(spec.jobs), sql(spec.running), sql(spec.queued), sql(tasks)])?;
    tx.execute(RUNS_SQL, [])?;
    tx.commit()?;
    if spec.indexes {
        conn.execute_batch(SCHEMA_INDEXES_SQL)?;
    }
    conn.execute_batch("ANALYZE;")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_what_the_spec_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.sqlite");
        generate(&path, &Spec::jobs(1000).indexes(false)).expect("generate");
        let c = Connection::open(&path).expect("open");
        let n = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql);
        assert_eq!(n("SELECT COUNT(*) FROM jobs"), 1000);
        assert_eq!(n("SELECT COUNT(*) FROM jobs WHERE status = 'running'"), 10);
        assert_eq!(n("SELECT COUNT(*) FROM jobs WHERE status = 'queued'"), 100);
        assert_eq!(n("SELECT COUNT(*) FROM tasks WHERE stage NOT IN ('done', 'cancelled')"), 50);
        // 900 started jobs, 110 of them retried with an earlier run too.
        assert_eq!(
            n("SELECT COUNT(*) FROM agent_runs"),
            900 + n("SELECT COUNT(*) FROM jobs WHERE started_at IS NOT NULL AND attempts >= 2 AND id % 2 = 0")
        );
        // Every running job's latest run is unfinished, and so are the crashed runs of ended jobs.
        assert_eq!(
            n("SELECT COUNT(*) FROM agent_runs AS r JOIN jobs AS j ON j.id = r.job_id
                WHERE r.finished_at IS NULL AND j.status IN ('done', 'failed', 'cancelled')"),
            n("SELECT COUNT(*) FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND id % 199 = 0")
        );
        assert_eq!(
            n("SELECT COUNT(*) FROM jobs AS j WHERE status = 'running'
                AND (SELECT finished_at FROM agent_runs WHERE job_id = j.id ORDER BY id DESC LIMIT 1) IS NULL"),
            10
        );
        // Runs are numbered in the order they started.
        assert_eq!(
            n("SELECT COUNT(*) FROM agent_runs AS a JOIN agent_runs AS b ON b.id = a.id + 1 WHERE b.job_id < a.job_id"),
            0
        );
        assert_eq!(n("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index'"), 0);
    }
}
