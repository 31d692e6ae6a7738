//! The orchestrator's writes, once: each function is one step of a task's or
//! a job's life as the orchestrator commits it, in the caller's transaction.
//! Demo mode, the write pattern (`tune`, the benchmarks' writer, the tests)
//! and the tests' helper processes all write through these; the generator
//! builds the same states in bulk (`generate`), and the pattern's test runs
//! these steps over a generated history.

use rusqlite::{Connection, params};

/// A task's stages in order; `done` follows the last.
pub const STAGES: [&str; 4] = ["analysis", "develop", "review", "test"];

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// Its agent succeeded.
    Done,
    /// Its agent failed (or crashed: its run may never record an end).
    Failed,
    /// It was cancelled before it ran.
    Cancelled,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Done => "done",
            Ended::Failed => "failed",
            Ended::Cancelled => "cancelled",
        }
    }
}

/// What an agent's run cost, as the orchestrator parses it from the agent's
/// output; all `None` when it could not be parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunCost {
    /// `cost_usd`.
    pub usd: Option<f64>,
    /// `input_tokens`, `output_tokens`, `cache_read_tokens`, `cache_creation_tokens`.
    pub tokens: [Option<i64>; 4],
}

/// How an agent is run: its process (if the orchestrator recorded one), model and effort.
#[derive(Debug, Clone, Copy)]
pub struct Agent<'a> {
    /// The agent process's pid.
    pub pid: Option<u32>,
    /// The model.
    pub model: &'a str,
    /// The effort.
    pub effort: &'a str,
}

/// A new task in its first stage; returns its id.
pub fn new_task(conn: &Connection, work_item: &str, repo: &str) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO tasks (work_item_id, repo, stage) VALUES (?1, ?2, 'analysis')",
        params![work_item, repo],
    )?;
    Ok(conn.last_insert_rowid())
}

/// A task's stage moves forward (after the last comes `done`); returns the new stage.
pub fn advance(conn: &Connection, task: i64) -> rusqlite::Result<&'static str> {
    let stage: String = conn.query_row("SELECT stage FROM tasks WHERE id = ?1", [task], |r| r.get(0))?;
    let next = STAGES.iter().position(|s| *s == stage).and_then(|i| STAGES.get(i + 1)).copied().unwrap_or("done");
    conn.execute("UPDATE tasks SET stage = ?2, updated_at = datetime('now') WHERE id = ?1", params![task, next])?;
    Ok(next)
}

/// A new job, queued, for `task` (or none); returns its id.
pub fn enqueue(conn: &Connection, task: Option<i64>, repo: &str, agent: &str) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO jobs (task_id, repo, agent, status, attempts) VALUES (?1, ?2, ?3, 'queued', 0)",
        params![task, repo, agent],
    )?;
    Ok(conn.last_insert_rowid())
}

/// `queued → running` with `attempts + 1` and `started_at`, and the run of
/// its agent inserted (unfinished); returns the run's id.
pub fn start(conn: &Connection, job: i64, agent: Agent<'_>) -> rusqlite::Result<i64> {
    conn.execute(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = datetime('now') WHERE id = ?1",
        [job],
    )?;
    add_run(conn, job, agent)
}

/// A further run of `job`'s agent, unfinished (an ended job that the
/// orchestrator runs again without touching the job: a rerun); returns its id.
pub fn add_run(conn: &Connection, job: i64, agent: Agent<'_>) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO agent_runs (job_id, agent, pid, model, effort)
         SELECT id, agent, ?2, ?3, ?4 FROM jobs WHERE id = ?1",
        params![job, agent.pid, agent.model, agent.effort],
    )?;
    Ok(conn.last_insert_rowid())
}

/// A run records its end and what it cost.
pub fn finish_run(conn: &Connection, run: i64, cost: &RunCost) -> rusqlite::Result<()> {
    let [input, output, cache_read, cache_creation] = cost.tokens;
    conn.execute(
        "UPDATE agent_runs SET finished_at = datetime('now'), cost_usd = ?2, input_tokens = ?3, output_tokens = ?4,
                cache_read_tokens = ?5, cache_creation_tokens = ?6
          WHERE id = ?1",
        params![run, cost.usd, input, output, cache_read, cache_creation],
    )?;
    Ok(())
}

/// A job ends (its runs are left as they are: a crashed agent's never records an end).
pub fn end(conn: &Connection, job: i64, how: Ended) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE jobs SET status = ?2, finished_at = datetime('now') WHERE id = ?1",
        params![job, how.as_str()],
    )?;
    Ok(())
}

/// A job goes back in the queue to be retried, keeping its attempts (so the
/// next run makes them more than one).
pub fn requeue(conn: &Connection, job: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE jobs SET status = 'queued', started_at = NULL, finished_at = NULL WHERE id = ?1", [job])?;
    Ok(())
}

/// `queued ↔ paused`.
pub fn toggle_pause(conn: &Connection, job: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE jobs SET status = CASE status WHEN 'queued' THEN 'paused' ELSE 'queued' END
          WHERE id = ?1 AND status IN ('queued', 'paused')",
        [job],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_lives_through_the_steps() -> Result<(), Box<dyn std::error::Error>> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(crate::SCHEMA_SQL)?;
        let task = new_task(&conn, "ORCH-1", "core")?;
        assert_eq!(advance(&conn, task)?, "develop");
        let job = enqueue(&conn, Some(task), "core", "developer")?;
        toggle_pause(&conn, job)?;
        let status = |c: &Connection| {
            c.query_row("SELECT status, attempts FROM jobs", [], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        };
        assert_eq!(status(&conn)?.0, "paused");
        toggle_pause(&conn, job)?;
        let run = start(&conn, job, Agent { pid: Some(42), model: "m", effort: "low" })?;
        assert_eq!(status(&conn)?, ("running".into(), 1));
        finish_run(&conn, run, &RunCost { usd: Some(0.5), tokens: [Some(1), Some(2), Some(3), Some(4)] })?;
        end(&conn, job, Ended::Failed)?;
        requeue(&conn, job)?;
        start(&conn, job, Agent { pid: None, model: "m", effort: "low" })?;
        assert_eq!(status(&conn)?, ("running".into(), 2));
        end(&conn, job, Ended::Done)?;
        add_run(&conn, job, Agent { pid: None, model: "m2", effort: "high" })?;
        let runs: Vec<(Option<u32>, Option<String>, Option<f64>)> = conn
            .prepare("SELECT pid, finished_at, cost_usd FROM agent_runs ORDER BY id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        assert_eq!(runs.len(), 3);
        assert_eq!((runs[0].0, runs[0].1.is_some(), runs[0].2), (Some(42), true, Some(0.5)));
        assert!(runs[1].1.is_none() && runs[2].1.is_none(), "a run records its end only when it finishes");
        Ok(())
    }
}
