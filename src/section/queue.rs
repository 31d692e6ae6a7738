//! `queue`: job counts per status, depth, the oldest queued job, retries, and
//! (when embedded with a worker) the worker's live state.

mod state;
mod tally;

use state::JobsState;
use std::sync::{Arc, Mutex};
pub use tally::{QueueCounts, Retries};
use tally::{Tally, status_key};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::Serialize;

use crate::section::metric::{Family, Gauge, Labels, Registry, count_gauge, gauge, labels};
use crate::section::{Changes, Kept, LoadError, Section, SectionName};
use crate::source::db::{MAX_SAFE_INTEGER, count, integer};
use crate::source::probe::WorkerLive;
use crate::source::time::age_seconds;

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

// Timestamps are compared in SQL so a deep queue is not shipped row by row,
// through `orch_epoch_ms`: the Rust parser itself, so what counts as a
// timestamp is the same everywhere.
const OLDEST_QUEUED_SQL: &str = "SELECT MIN(orch_epoch_ms(created_at)) FROM jobs WHERE status = 'queued'";

// Only integer attempts count: SQLite orders any text above every number, so an
// unguarded `attempts > 1` would count garbage as a retry.
const RETRIES_SQL: &str = "
SELECT COUNT(CASE WHEN attempts > 1 THEN 1 END),
       TOTAL(CASE WHEN attempts > 1 THEN attempts - 1 END),
       MAX(attempts)
  FROM jobs
 WHERE typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND ?1";

impl Queue {
    fn oldest_queued(conn: &Connection) -> Result<Option<DateTime<Utc>>, LoadError> {
        Ok(conn
            .prepare_cached(OLDEST_QUEUED_SQL)?
            .query_row([], |r| Ok(integer(r.get_ref(0)?).and_then(DateTime::from_timestamp_millis)))?)
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
                tally.add(status_key(row.get_ref(0)?), None, count(row.get_ref(1)?).unwrap_or(0));
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
        self.refresh_since(conn, &Changes::Unknown)
    }

    fn refresh_since(&self, conn: &Connection, changes: &Changes) -> Result<Self::Data, LoadError> {
        let (counts, retries) = self.state.refresh(conn, "jobs", changes)?.finish();
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
            oldest_queued_age_s: data.oldest_queued.and_then(|t| age_seconds(t, generated_at)),
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
        registry.register("orch_queue_depth", "Queued jobs", count_gauge(q.depth));
        if let Some(age) = q.oldest_queued_age_s {
            registry.register("orch_queue_oldest_age_seconds", "Age of the oldest queued job", gauge(age));
        }
        registry.register("orch_jobs_retried", "Jobs started more than once", count_gauge(q.retries.retried_jobs));
        registry.register(
            "orch_job_retries",
            "Retries over all jobs (attempts - 1)",
            count_gauge(q.retries.total_retries),
        );
        registry.register("orch_job_max_attempts", "Largest attempts of any job", count_gauge(q.retries.max_attempts));
    }
}
