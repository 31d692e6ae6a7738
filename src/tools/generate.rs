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

/// One run per started job; costs of finished runs (a few never parsed: NULL).
const RUNS_SQL: &str = "INSERT INTO agent_runs (id, job_id, agent, pid, model, effort, started_at, finished_at,
                             cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens)
     SELECT id, id, agent, NULL, 'model-' || (id % 3), CASE id % 3 WHEN 0 THEN 'low' WHEN 1 THEN 'medium' ELSE 'high' END,
            started_at, finished_at,
            CASE WHEN finished_at IS NULL OR id % 23 = 0 THEN NULL ELSE (id % 1000) / 100.0 END,
            CASE WHEN finished_at IS NULL OR id % 23 = 0 THEN NULL ELSE 1000 + id % 50000 END,
            CASE WHEN finished_at IS NULL OR id % 23 = 0 THEN NULL ELSE 100 + id % 5000 END,
            CASE WHEN finished_at IS NULL OR id % 23 = 0 THEN NULL ELSE id % 20000 END,
            CASE WHEN finished_at IS NULL OR id % 23 = 0 THEN NULL ELSE id % 700 END
       FROM jobs WHERE started_at IS NOT NULL";

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
        assert_eq!(n("SELECT COUNT(*) FROM agent_runs"), 900);
        assert_eq!(n("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index'"), 0);
    }
}
