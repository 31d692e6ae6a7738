//! `queue`: job counts per status, depth, the oldest queued job, retries, and
//! (when embedded with a worker) the worker's live state.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::section::metric::{Family, Gauge, Labels, Registry, gauge, labels};
use crate::section::{Incremental, Kept, LoadError, Section, SectionName};
use crate::source::db::{MAX_SAFE_INTEGER, count, text};
use crate::source::probe::WorkerLive;
use crate::source::time::seconds_between;

/// The queue section; with a worker probe it also reports the host worker's live state.
#[derive(Debug, Default)]
pub struct Queue {
    worker: Option<Arc<Mutex<WorkerLive>>>,
    /// What the incremental refresh keeps (see [`JobsState`]).
    state: Kept<JobsState>,
}

impl Queue {
    /// A queue section without a worker (`breaker`, `max_concurrency`, `poll_interval` are `null`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue section that reports the latest reads of a worker probe.
    pub fn with_worker(worker: Arc<Mutex<WorkerLive>>) -> Self {
        Self { worker: Some(worker), state: Kept::default() }
    }
}

/// The statuses that are always present in `counts`, in this order.
pub const KNOWN_STATUSES: [&str; 5] = ["queued", "running", "done", "failed", "cancelled"];

/// Jobs per status: the five known statuses first (0 when none), then any other, by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueCounts(pub Vec<(String, u64)>);

impl QueueCounts {
    /// The count for `status` (0 when absent).
    pub fn get(&self, status: &str) -> u64 {
        self.0.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n)
    }
}

impl schemars::JsonSchema for QueueCounts {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "QueueCounts".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Jobs per status: the five known statuses always, any other status found by its own name.",
            "type": "object",
            "required": KNOWN_STATUSES,
            "additionalProperties": { "type": "integer", "minimum": 0 }
        })
    }
}

impl Serialize for QueueCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (status, n) in &self.0 {
            map.serialize_entry(status, n)?;
        }
        map.end()
    }
}

/// Retry statistics over all jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Retries {
    /// Jobs with `attempts > 1`.
    pub retried_jobs: u64,
    /// Sum of `attempts − 1` over those jobs.
    pub total_retries: u64,
    /// Largest `attempts` over all jobs (0 when there are none).
    pub max_attempts: u64,
}

/// What a refresh reads.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueData {
    counts: QueueCounts,
    oldest_queued: Option<DateTime<Utc>>,
    retries: Retries,
    worker: WorkerLive,
}

/// The queue section in the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct QueueView {
    /// Jobs per status.
    pub counts: QueueCounts,
    /// `counts.queued`.
    pub depth: u64,
    /// `generated_at` − the earliest parseable `created_at` among queued jobs.
    pub oldest_queued_age_s: Option<f64>,
    /// Retry statistics.
    pub retries: Retries,
    /// The host worker's breaker snapshot; `None` standalone.
    pub breaker: Option<serde_json::Value>,
    /// The host worker's `max_concurrency`; `None` standalone.
    pub max_concurrency: Option<serde_json::Value>,
    /// The host worker's `poll_interval`; `None` standalone.
    pub poll_interval: Option<serde_json::Value>,
}

const COUNTS_SQL: &str = "SELECT status, COUNT(*) FROM jobs GROUP BY status";

// Timestamps are compared in SQL so a deep queue is not shipped row by row. The
// GLOB keeps SQLite's lenient date parser ('now', bare julian numbers) away
// from bad data; what passes is exactly the shape `time::parse_timestamp` takes.
const OLDEST_QUEUED_SQL: &str = "
SELECT MIN(unixepoch(trim(created_at), 'subsec'))
  FROM jobs
 WHERE status = 'queued'
   AND typeof(created_at) = 'text'
   AND trim(created_at) GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][ T][0-9][0-9]:[0-9][0-9]:[0-9][0-9]*'";

// Only integer attempts count: SQLite orders any text above every number, so an
// unguarded `attempts > 1` would count garbage as a retry.
const RETRIES_SQL: &str = "
SELECT COUNT(CASE WHEN attempts > 1 THEN 1 END),
       TOTAL(CASE WHEN attempts > 1 THEN attempts - 1 END),
       MAX(attempts)
  FROM jobs
 WHERE typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND ?1";

/// Job counts per status name and retry statistics, in integers that add up
/// the same in any order.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tally {
    counts: Vec<(String, u64)>,
    retried_jobs: u64,
    total_retries: u64,
    max_attempts: u64,
}

impl Tally {
    /// One job: its status (a job whose status cannot be named is left out of
    /// the counts, as in the full query) and its attempts, when valid.
    fn add(&mut self, status: Option<String>, attempts: Option<u64>, n: u64) {
        if let Some(status) = status {
            match self.counts.iter_mut().find(|(s, _)| *s == status) {
                Some(slot) => slot.1 += n,
                None => self.counts.push((status, n)),
            }
        }
        if let Some(a) = attempts {
            self.max_attempts = self.max_attempts.max(a);
            if a > 1 {
                self.retried_jobs += n;
                self.total_retries += (a - 1) * n;
            }
        }
    }

    fn add_row(&mut self, row: &rusqlite::Row<'_>) -> Result<(), rusqlite::Error> {
        self.add(text(row.get_ref(1)?), count(row.get_ref(2)?), 1);
        Ok(())
    }

    fn plus(mut self, other: &Tally) -> Tally {
        for (status, n) in &other.counts {
            self.add(Some(status.clone()), None, *n);
        }
        self.retried_jobs += other.retried_jobs;
        self.total_retries += other.total_retries;
        self.max_attempts = self.max_attempts.max(other.max_attempts);
        self
    }

    /// `counts` in contract order (the five known statuses first, then others
    /// by name) and the retry statistics.
    fn finish(&self) -> (QueueCounts, Retries) {
        let mut counts: Vec<(String, u64)> = KNOWN_STATUSES.iter().map(|s| ((*s).to_owned(), 0)).collect();
        let mut others = Vec::new();
        for (status, n) in &self.counts {
            match counts.iter_mut().find(|(s, _)| s == status) {
                Some(slot) => slot.1 += n,
                None => others.push((status.clone(), *n)),
            }
        }
        others.sort();
        counts.extend(others);
        let cap = |n: u64| n.min(MAX_SAFE_INTEGER as u64);
        let retries = Retries {
            retried_jobs: self.retried_jobs,
            total_retries: cap(self.total_retries),
            max_attempts: self.max_attempts,
        };
        (QueueCounts(counts), retries)
    }
}

// Terminal statuses never change under the orchestrator's write pattern; every
// other job (queued, running, paused, failed: a failed job may be retried) is
// live. The live ones are found through idx_jobs_status as the index ranges
// around 'cancelled' and 'done', so a refresh reads them, not the history (a
// NULL status, possible only in a schema without NOT NULL, is its own lookup:
// `IS NULL` in the same OR would turn the plan into a table scan).
const LIVE_SQL: &str = "
SELECT id, status, attempts FROM jobs
 WHERE status < 'cancelled' OR (status > 'cancelled' AND status < 'done') OR status > 'done'
UNION ALL
SELECT id, status, attempts FROM jobs WHERE status IS NULL";
/// Terminal jobs up to a rowid, aggregated (building the state).
const TERMINAL_SQL: &str = "
SELECT status, COUNT(*),
       COUNT(CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 2 AND ?1 THEN 1 END),
       TOTAL(CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 2 AND ?1 THEN attempts - 1 END),
       MAX(CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND ?1 THEN attempts END)
  FROM jobs WHERE status IN ('done', 'cancelled') AND id <= ?2 GROUP BY status";
/// Jobs inserted since the last refresh that are already terminal (a rowid range).
const NEW_TERMINAL_SQL: &str =
    "SELECT id, status, attempts FROM jobs WHERE id > ?1 AND status IN ('done', 'cancelled')";
/// Jobs that were live at the last refresh, by key (the ones no longer live became terminal).
const KNOWN_JOBS_SQL: &str = "SELECT id, status, attempts FROM jobs WHERE id IN (SELECT value FROM json_each(?1))";
const MAX_JOB_SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM jobs";

/// What the queue section keeps between refreshes: counts and retries of the
/// terminal jobs (done, cancelled), the ids of the live ones, and the highest
/// rowid seen.
#[derive(Debug, Clone, Default)]
struct JobsState {
    max_id: i64,
    terminal: Tally,
    live: Vec<i64>,
}

impl Incremental for JobsState {
    type Out = Tally;

    fn build(conn: &Connection) -> Result<JobsState, LoadError> {
        let max_id: i64 = conn.query_row(MAX_JOB_SQL, [], |r| r.get(0))?;
        let mut terminal = Tally::default();
        let mut stmt = conn.prepare_cached(TERMINAL_SQL)?;
        let mut rows = stmt.query((MAX_SAFE_INTEGER, max_id))?;
        while let Some(r) = rows.next()? {
            let n = count(r.get_ref(1)?).unwrap_or(0);
            terminal.add(text(r.get_ref(0)?), None, n);
            terminal.retried_jobs += count(r.get_ref(2)?).unwrap_or(0);
            terminal.total_retries += match r.get_ref(3)? {
                ValueRef::Real(t) if t.is_finite() && t >= 0.0 => t as u64,
                _ => 0,
            };
            terminal.max_attempts = terminal.max_attempts.max(count(r.get_ref(4)?).unwrap_or(0));
        }
        // The live ids as of this snapshot: the first advance finds them all still live.
        let mut live = Vec::new();
        let mut stmt = conn.prepare_cached(LIVE_SQL)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            if id <= max_id {
                live.push(id);
            }
        }
        live.sort_unstable();
        Ok(JobsState { max_id, terminal, live })
    }

    /// Folds in what changed; the tally of every job now, or `None` when a
    /// job the state relies on is gone (a history edit: rebuild).
    fn advance(&mut self, conn: &Connection) -> Result<Option<Tally>, LoadError> {
        let mut live_now = Tally::default();
        let mut live = Vec::new();
        let mut max_id = self.max_id;
        {
            let mut stmt = conn.prepare_cached(LIVE_SQL)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                max_id = max_id.max(id);
                live.push(id);
                live_now.add_row(r)?;
            }
        }
        live.sort_unstable();
        let mut terminal = self.terminal.clone();
        // Live at the last refresh, not now: they became terminal since.
        let left: Vec<i64> = self.live.iter().copied().filter(|id| live.binary_search(id).is_err()).collect();
        if !left.is_empty() {
            let ids = serde_json::to_string(&left).map_err(|e| LoadError::Other(e.to_string()))?;
            let mut stmt = conn.prepare_cached(KNOWN_JOBS_SQL)?;
            let mut rows = stmt.query([ids])?;
            let mut seen = 0;
            while let Some(r) = rows.next()? {
                terminal.add_row(r)?;
                seen += 1;
            }
            if seen != left.len() {
                return Ok(None); // a job was deleted
            }
        }
        {
            let mut stmt = conn.prepare_cached(NEW_TERMINAL_SQL)?;
            let mut rows = stmt.query([self.max_id])?;
            while let Some(r) = rows.next()? {
                max_id = max_id.max(r.get(0)?);
                terminal.add_row(r)?;
            }
        }
        let top: i64 = conn.query_row(MAX_JOB_SQL, [], |r| r.get(0))?;
        if top < self.max_id {
            return Ok(None); // the newest jobs were deleted
        }
        *self = JobsState { max_id: max_id.max(top), terminal, live };
        Ok(Some(self.terminal.clone().plus(&live_now)))
    }
}

impl Queue {
    fn oldest_queued(conn: &Connection) -> Result<Option<DateTime<Utc>>, LoadError> {
        Ok(conn.prepare_cached(OLDEST_QUEUED_SQL)?.query_row([], |r| {
            Ok(match r.get_ref(0)? {
                ValueRef::Real(s) => DateTime::from_timestamp_millis((s * 1000.0).round() as i64),
                ValueRef::Integer(s) => DateTime::from_timestamp(s, 0),
                _ => None,
            })
        })?)
    }

    fn worker(&self) -> WorkerLive {
        self.worker.as_ref().map(|w| w.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default()
    }
}

impl Section for Queue {
    const NAME: SectionName = SectionName::QUEUE;
    type Data = QueueData;
    type View = QueueView;
    const STATEMENTS: &'static [&'static str] = &[COUNTS_SQL, OLDEST_QUEUED_SQL, RETRIES_SQL];
    const ROWS_SQL: Option<&'static str> = Some("SELECT COUNT(*) FROM jobs");

    fn load(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        let mut tally = Tally::default();
        {
            let mut stmt = conn.prepare_cached(COUNTS_SQL)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                // A NULL status cannot be named; such jobs are left out of `counts`.
                tally.add(text(row.get_ref(0)?), None, count(row.get_ref(1)?).unwrap_or(0));
            }
        }
        let retries = conn.prepare_cached(RETRIES_SQL)?.query_row([MAX_SAFE_INTEGER], |r| {
            Ok(Retries {
                retried_jobs: count(r.get_ref(0)?).unwrap_or(0),
                total_retries: match r.get_ref(1)? {
                    ValueRef::Real(t) if t.is_finite() && t >= 0.0 => (t as u64).min(MAX_SAFE_INTEGER as u64),
                    _ => 0,
                },
                max_attempts: count(r.get_ref(2)?).unwrap_or(0),
            })
        })?;
        let (counts, _) = tally.finish();
        Ok(QueueData { counts, oldest_queued: Self::oldest_queued(conn)?, retries, worker: self.worker() })
    }

    fn refresh(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        let (counts, retries) = self.state.refresh(conn, "jobs")?.finish();
        Ok(QueueData { counts, oldest_queued: Self::oldest_queued(conn)?, retries, worker: self.worker() })
    }

    fn forget(&self) {
        self.state.forget();
    }

    /// The worker's live state moves without a database change.
    fn resample(&self, data: &Self::Data) -> Option<Self::Data> {
        let live = self.worker.as_ref()?.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (live != data.worker).then(|| QueueData { worker: live, ..data.clone() })
    }

    fn view(data: &Self::Data, generated_at: DateTime<Utc>) -> Self::View {
        QueueView {
            depth: data.counts.get("queued"),
            counts: data.counts.clone(),
            oldest_queued_age_s: data.oldest_queued.map(|t| seconds_between(t, generated_at)),
            retries: data.retries,
            breaker: data.worker.breaker.clone(),
            max_concurrency: data.worker.max_concurrency.clone(),
            poll_interval: data.worker.poll_interval.clone(),
        }
    }

    fn expose(q: &Self::View, _: Option<u64>, registry: &mut Registry) {
        let jobs = Family::<Labels, Gauge>::default();
        for (status, n) in &q.counts.0 {
            jobs.get_or_create(&labels(&[("status", status)])).set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        registry.register("orch_jobs", "Jobs per status", jobs);
        registry.register("orch_queue_depth", "Queued jobs", gauge(q.depth as f64));
        if let Some(age) = q.oldest_queued_age_s {
            registry.register("orch_queue_oldest_age_seconds", "Age of the oldest queued job", gauge(age));
        }
        registry.register("orch_jobs_retried", "Jobs started more than once", gauge(q.retries.retried_jobs as f64));
        registry.register(
            "orch_job_retries",
            "Retries over all jobs (attempts - 1)",
            gauge(q.retries.total_retries as f64),
        );
        registry.register("orch_job_max_attempts", "Largest attempts of any job", gauge(q.retries.max_attempts as f64));
    }
}
