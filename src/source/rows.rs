//! The lenient value readers every section uses (a value of the wrong type
//! or out of range is `None`, never an error), and the queries sections share.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::source::time::parse_timestamp;

/// Largest integer JSON consumers can hold exactly; larger stored counts are bad data.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The longest text value served, in bytes (README, "The envelope"): longer ones
/// are cut at a character boundary and end with [`ELLIPSIS`].
pub(crate) const MAX_TEXT_BYTES: usize = 1024;
/// What ends a cut text value.
pub(crate) const ELLIPSIS: char = '…';
/// The name under which a value that cannot be named (NULL, a BLOB, text
/// that is not UTF-8) is counted or labelled where a name is needed: job
/// statuses in `counts`, stages in the exposition's labels.
pub(crate) const UNDECODABLE: &str = "(undecodable)";

/// `s` as served: at most [`MAX_TEXT_BYTES`] of it, then `…` when it was longer.
pub(crate) fn bounded(s: &str) -> String {
    if s.len() <= MAX_TEXT_BYTES {
        return s.to_owned();
    }
    let mut out = String::with_capacity(MAX_TEXT_BYTES + ELLIPSIS.len_utf8());
    out.push_str(&s[..s.floor_char_boundary(MAX_TEXT_BYTES)]);
    out.push(ELLIPSIS);
    out
}

/// A text value as served (see [`bounded`]); numbers are shown as text;
/// `None` for NULL, a BLOB or text that is not valid UTF-8 (bad data).
pub(crate) fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok().map(bounded),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(r) => Some(r.to_string()),
        ValueRef::Null | ValueRef::Blob(_) => None,
    }
}

/// An integer; `None` for anything else (text in a numeric column is bad data).
pub(crate) fn integer(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

/// A count or token number: an integer from 0 to [`MAX_SAFE_INTEGER`].
pub(crate) fn count(v: ValueRef<'_>) -> Option<u64> {
    integer(v).filter(|i| (0..=MAX_SAFE_INTEGER).contains(i)).and_then(|i| u64::try_from(i).ok())
}

/// A non-negative finite amount (cost in USD); integers are accepted.
pub(crate) fn amount(v: ValueRef<'_>) -> Option<f64> {
    let x = match v {
        ValueRef::Real(r) => r,
        ValueRef::Integer(i) => i as f64,
        _ => return None,
    };
    (x.is_finite() && x >= 0.0 && x <= MAX_SAFE_INTEGER as f64).then_some(x)
}

/// A timestamp in one of the orchestrator's forms.
pub(crate) fn timestamp(v: ValueRef<'_>) -> Option<DateTime<Utc>> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(parse_timestamp),
        _ => None,
    }
}

/// A process id the kernel could have given: 1 ..= i32::MAX.
pub(crate) fn pid(v: ValueRef<'_>) -> Option<i32> {
    integer(v).and_then(|i| i32::try_from(i).ok()).filter(|p| *p > 0)
}

/// A running job with its latest run (the agents and cost sections both read this).
#[derive(Debug, Clone, PartialEq)]
pub struct RunningJob {
    /// `jobs.id`.
    pub job_id: i64,
    /// `jobs.agent`.
    pub job_agent: Option<String>,
    /// `jobs.repo`.
    pub repo: Option<String>,
    /// `jobs.started_at`.
    pub job_started_at: Option<DateTime<Utc>>,
    /// The latest run, when there is one.
    pub run: Option<RunRow>,
}

impl RunningJob {
    /// Who runs the job: the latest run's agent, else `jobs.agent` (no run yet).
    pub fn agent(&self) -> Option<String> {
        self.run.as_ref().and_then(|r| r.agent.clone()).or_else(|| self.job_agent.clone())
    }
}

/// The stored values of one agent run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// `agent_runs.id`.
    pub run_id: i64,
    /// `agent_runs.agent`.
    pub agent: Option<String>,
    /// `agent_runs.pid`, when it is a possible pid.
    pub pid: Option<i32>,
    /// `agent_runs.model`.
    pub model: Option<String>,
    /// `agent_runs.effort`.
    pub effort: Option<String>,
    /// `agent_runs.started_at`.
    pub started_at: Option<DateTime<Utc>>,
    /// `cost_usd`, `input_tokens`, `output_tokens`, `cache_read_tokens`, `cache_creation_tokens`.
    pub cost: RunCost,
}

/// A run's cost columns; `None` is SQL NULL or bad data, never zero.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct RunCost {
    /// `agent_runs.cost_usd`.
    pub cost_usd: Option<f64>,
    /// `agent_runs.input_tokens`.
    pub input_tokens: Option<u64>,
    /// `agent_runs.output_tokens`.
    pub output_tokens: Option<u64>,
    /// `agent_runs.cache_read_tokens`.
    pub cache_read_tokens: Option<u64>,
    /// `agent_runs.cache_creation_tokens`.
    pub cache_creation_tokens: Option<u64>,
}

/// The query behind [`running_jobs`].
pub(crate) const RUNNING_JOBS_SQL: &str = "
SELECT j.id, j.agent, j.repo, j.started_at,
       r.id, r.agent, r.pid, r.model, r.effort, r.started_at,
       r.cost_usd, r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_creation_tokens
  FROM jobs AS j
  LEFT JOIN agent_runs AS r
    ON r.id = (SELECT MAX(id) FROM agent_runs WHERE job_id = j.id)
 WHERE j.status = 'running'
 ORDER BY j.id";

/// Every job with `status = 'running'`, by job id, each with its highest-id run.
pub(crate) fn running_jobs(conn: &Connection) -> Result<Vec<RunningJob>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(RUNNING_JOBS_SQL)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let run = integer(row.get_ref(4)?).map(|run_id| -> Result<RunRow, rusqlite::Error> {
            Ok(RunRow {
                run_id,
                agent: text(row.get_ref(5)?),
                pid: pid(row.get_ref(6)?),
                model: text(row.get_ref(7)?),
                effort: text(row.get_ref(8)?),
                started_at: timestamp(row.get_ref(9)?),
                cost: RunCost {
                    cost_usd: amount(row.get_ref(10)?),
                    input_tokens: count(row.get_ref(11)?),
                    output_tokens: count(row.get_ref(12)?),
                    cache_read_tokens: count(row.get_ref(13)?),
                    cache_creation_tokens: count(row.get_ref(14)?),
                },
            })
        });
        out.push(RunningJob {
            job_id: row.get(0)?,
            job_agent: text(row.get_ref(1)?),
            repo: text(row.get_ref(2)?),
            job_started_at: timestamp(row.get_ref(3)?),
            run: run.transpose()?,
        });
    }
    Ok(out)
}
