//! `queue`: job counts per status, depth, the oldest queued job, retries, and
//! (when embedded with a worker) the worker's live state.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::section::metric::{Family, Gauge, Labels, Registry, count_gauge, gauge, labels};
use crate::section::{ChangedRows, Changes, Incremental, Kept, LoadError, Section, SectionName};
use crate::source::db::{MAX_SAFE_INTEGER, UNDECODABLE, count, integer, text};
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

/// The statuses that are always present in `counts`, in this order.
pub const KNOWN_STATUSES: [&str; 5] = ["queued", "running", "done", "failed", "cancelled"];

/// A job's status as a `counts` key: one whose status cannot be named is
/// counted under [`UNDECODABLE`], so every job is counted somewhere.
fn status_key(v: ValueRef<'_>) -> String {
    text(v).unwrap_or_else(|| UNDECODABLE.to_owned())
}

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
    /// `n` jobs of one status, with their attempts when valid.
    fn add(&mut self, status: String, attempts: Option<u64>, n: u64) {
        match self.counts.iter_mut().find(|(s, _)| *s == status) {
            Some(slot) => slot.1 += n,
            None => self.counts.push((status, n)),
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
        self.add(status_key(row.get_ref(1)?), count(row.get_ref(2)?), 1);
        Ok(())
    }

    fn plus(mut self, other: &Tally) -> Tally {
        for (status, n) in &other.counts {
            self.add(status.clone(), None, *n);
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

// Under the orchestrator's write pattern, done and cancelled jobs never change
// again; a failed job changes only by a retry (failed -> queued); every other
// job (queued, running, paused, any other status) is live. A refresh reads the
// live ones, found through idx_jobs_status as the index ranges around 'cancelled',
// 'done' and 'failed' (a NULL status, possible only in a schema without NOT
// NULL, is its own lookup: `IS NULL` in the same OR would turn the plan into a
// table scan), and not the history.
const LIVE_SQL: &str = "
SELECT id, status, attempts FROM jobs
 WHERE status < 'cancelled' OR (status > 'cancelled' AND status < 'done')
    OR (status > 'done' AND status < 'failed') OR status > 'failed'
UNION ALL
SELECT id, status, attempts FROM jobs WHERE status IS NULL";
/// Terminal jobs up to a rowid, aggregated (building the state).
const TERMINAL_SQL: &str = "
SELECT status, COUNT(*),
       COUNT(CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 2 AND ?1 THEN 1 END),
       TOTAL(CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 2 AND ?1 THEN attempts - 1 END),
       MAX(CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND ?1 THEN attempts END)
  FROM jobs WHERE status IN ('done', 'cancelled') AND id <= ?2 GROUP BY status";
/// Failed jobs up to a rowid, one by one (building the state: a retry takes one out again).
const FAILED_SQL: &str = "SELECT id, attempts FROM jobs WHERE status = 'failed' AND id <= ?1";
/// How many jobs are failed now, from the index alone (no row is read).
const FAILED_COUNT_SQL: &str = "SELECT COUNT(*) FROM jobs WHERE status = 'failed'";
/// Which jobs are failed now, from the index alone.
const FAILED_IDS_SQL: &str = "SELECT id FROM jobs WHERE status = 'failed'";
/// Jobs inserted since the last refresh that are already settled (a rowid range).
const NEW_SETTLED_SQL: &str =
    "SELECT id, status, attempts FROM jobs WHERE id > ?1 AND status IN ('done', 'cancelled', 'failed')";
/// Jobs by key (ones that left the live set, or a failed one that may have been retried).
const KNOWN_JOBS_SQL: &str = "SELECT id, status, attempts FROM jobs WHERE id IN (SELECT value FROM json_each(?1))";
const MAX_JOB_SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM jobs";
/// The jobs that started since the last refresh: a job's start inserts its run
/// (README, "Freshness and exactness"), so a failed job retried and failed again between two
/// refreshes is among these.
const NEW_RUNS_SQL: &str = "SELECT id, job_id FROM agent_runs WHERE id > ?1";
const MAX_RUN_SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM agent_runs";

/// The failed jobs the queue keeps (a failed job changes only by a retry),
/// with their attempts (`None`: not a valid count), and how many have each
/// attempts count, so that their tally costs what changed, not how many there are.
#[derive(Debug, Default)]
struct FailedJobs {
    by_id: std::collections::BTreeMap<i64, Option<u64>>,
    by_attempts: std::collections::BTreeMap<u64, u64>,
}

impl FailedJobs {
    fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.by_id.keys().copied()
    }

    fn forget_attempts(&mut self, attempts: Option<u64>) {
        if let Some(a) = attempts
            && let Some(n) = self.by_attempts.get_mut(&a)
        {
            *n -= 1;
            if *n == 0 {
                self.by_attempts.remove(&a);
            }
        }
    }

    /// Files job `id` as failed with `attempts` (replacing what was kept of it).
    fn insert(&mut self, id: i64, attempts: Option<u64>) {
        if let Some(before) = self.by_id.insert(id, attempts) {
            self.forget_attempts(before);
        }
        if let Some(a) = attempts {
            *self.by_attempts.entry(a).or_default() += 1;
        }
    }

    fn remove(&mut self, id: i64) {
        if let Some(before) = self.by_id.remove(&id) {
            self.forget_attempts(before);
        }
    }

    /// The failed jobs on pages the commits wrote.
    fn within(&self, rows: &ChangedRows) -> Vec<i64> {
        rows.ranges().iter().flat_map(|&(lo, hi)| self.by_id.range(lo..=hi).map(|(id, _)| *id)).collect()
    }

    /// Their tally.
    fn tally(&self) -> Tally {
        let mut t = Tally { counts: vec![("failed".to_owned(), self.len() as u64)], ..Tally::default() };
        t.max_attempts = self.by_attempts.keys().next_back().copied().unwrap_or(0);
        for (&a, &n) in self.by_attempts.range(2..) {
            t.retried_jobs += n;
            t.total_retries += (a - 1) * n;
        }
        t
    }
}

/// What the queue section keeps between refreshes: counts and retries of the
/// terminal jobs (done, cancelled), the failed jobs with their attempts, the
/// ids of the live ones, and the highest job and run rowids seen.
#[derive(Debug, Default)]
struct JobsState {
    max_id: i64,
    /// The highest `agent_runs` rowid seen; `None` when there is no readable
    /// `agent_runs` (every failed job is then read again at each refresh).
    max_run: Option<i64>,
    terminal: Tally,
    /// Failed jobs by id with their attempts.
    failed: FailedJobs,
    live: Vec<i64>,
}

/// What reading a settled job by key found.
enum Settled {
    Yes,
    /// The job is live (it should have been in the live read) or gone: a history edit.
    Edited,
}

impl JobsState {
    /// Files a job read by key or by rowid range under what it is now: a
    /// terminal one in the terminal tally, a failed one in the failed list.
    fn settle(&mut self, row: &rusqlite::Row<'_>) -> Result<Settled, LoadError> {
        let id: i64 = row.get(0)?;
        let status = text(row.get_ref(1)?);
        let attempts = count(row.get_ref(2)?);
        match status.as_deref() {
            Some(done @ ("done" | "cancelled")) => self.terminal.add(done.to_owned(), attempts, 1),
            Some("failed") => self.failed.insert(id, attempts),
            _ => return Ok(Settled::Edited),
        }
        Ok(Settled::Yes)
    }

    /// Reads `ids` by key and settles each (they are no longer live, or
    /// failed ones that may have changed); `false` when one is gone or live.
    fn settle_by_key(&mut self, conn: &Connection, ids: &[i64]) -> Result<bool, LoadError> {
        if ids.is_empty() {
            return Ok(true);
        }
        // Whatever they are now, they are re-filed below.
        ids.iter().for_each(|id| self.failed.remove(*id));
        let json = serde_json::to_string(ids).map_err(|e| LoadError::Other(e.to_string()))?;
        let mut stmt = conn.prepare_cached(KNOWN_JOBS_SQL)?;
        let mut rows = stmt.query([json])?;
        let mut seen = 0;
        while let Some(r) = rows.next()? {
            if matches!(self.settle(r)?, Settled::Edited) {
                return Ok(false);
            }
            seen += 1;
        }
        Ok(seen == ids.len())
    }

    /// The failed jobs that may have been retried since the last refresh:
    /// those with a new run, or every one when runs cannot be read.
    fn restarted(&mut self, conn: &Connection) -> Result<Option<Vec<i64>>, LoadError> {
        let Some(seen) = self.max_run else {
            return Ok(Some(self.failed.ids().collect()));
        };
        let mut jobs = Vec::new();
        let mut top = seen;
        {
            let mut stmt = conn.prepare_cached(NEW_RUNS_SQL)?;
            let mut rows = stmt.query([seen])?;
            while let Some(r) = rows.next()? {
                top = top.max(r.get(0)?);
                if let Some(job) = integer(r.get_ref(1)?).filter(|job| self.failed.contains(*job)) {
                    jobs.push(job);
                }
            }
        }
        let max: i64 = conn.query_row(MAX_RUN_SQL, [], |r| r.get(0))?;
        if max < seen {
            return Ok(None); // the newest runs were deleted
        }
        self.max_run = Some(top.max(max));
        jobs.sort_unstable();
        jobs.dedup();
        Ok(Some(jobs))
    }

    /// The failed list against the index: a failed job can also leave without
    /// a run (failed -> queued -> cancelled between two refreshes). The count
    /// comes from the index alone; only when it differs are ids compared.
    fn check_failed(&mut self, conn: &Connection) -> Result<bool, LoadError> {
        let n: i64 = conn.query_row(FAILED_COUNT_SQL, [], |r| r.get(0))?;
        if usize::try_from(n).ok() == Some(self.failed.len()) {
            return Ok(true);
        }
        let mut now: Vec<i64> = Vec::new();
        {
            let mut stmt = conn.prepare_cached(FAILED_IDS_SQL)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                now.push(r.get(0)?);
            }
        }
        now.sort_unstable();
        let mut differ: Vec<i64> = self.failed.ids().filter(|id| now.binary_search(id).is_err()).collect();
        differ.extend(now.iter().copied().filter(|id| !self.failed.contains(*id)));
        differ.sort_unstable();
        self.settle_by_key(conn, &differ)
    }
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
            terminal.add(status_key(r.get_ref(0)?), None, n);
            terminal.retried_jobs += count(r.get_ref(2)?).unwrap_or(0);
            terminal.total_retries += match r.get_ref(3)? {
                ValueRef::Real(t) if t.is_finite() && t >= 0.0 => t as u64,
                _ => 0,
            };
            terminal.max_attempts = terminal.max_attempts.max(count(r.get_ref(4)?).unwrap_or(0));
        }
        let mut failed = FailedJobs::default();
        let mut stmt = conn.prepare_cached(FAILED_SQL)?;
        let mut rows = stmt.query([max_id])?;
        while let Some(r) = rows.next()? {
            failed.insert(r.get(0)?, count(r.get_ref(1)?));
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
        // Without a readable agent_runs (a schema without it, or without
        // job_id), failed jobs are read again at every refresh instead.
        let max_run =
            match conn.prepare_cached(NEW_RUNS_SQL).and_then(|_| conn.query_row(MAX_RUN_SQL, [], |r| r.get(0))) {
                Ok(max) => Some(max),
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::Unknown) => None,
                Err(e) => return Err(e.into()),
            };
        Ok(JobsState { max_id, max_run, terminal, failed, live })
    }

    /// Folds in what changed; the tally of every job now, or `None` when a
    /// job the state relies on is gone (a history edit: rebuild).
    fn advance(&mut self, conn: &Connection, changes: &Changes) -> Result<Option<Tally>, LoadError> {
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
        // Failed at the last refresh, live now: retried.
        live.iter().for_each(|id| self.failed.remove(*id));
        // Live at the last refresh, not now: they settled since.
        let left: Vec<i64> = self.live.iter().copied().filter(|id| live.binary_search(id).is_err()).collect();
        if !self.settle_by_key(conn, &left)? {
            return Ok(None);
        }
        // Failed then and failed (or settled) again now, having started in between.
        let Some(restarted) = self.restarted(conn)? else {
            return Ok(None);
        };
        if !self.settle_by_key(conn, &restarted)? {
            return Ok(None);
        }
        {
            let mut stmt = conn.prepare_cached(NEW_SETTLED_SQL)?;
            let mut rows = stmt.query([self.max_id])?;
            while let Some(r) = rows.next()? {
                max_id = max_id.max(r.get(0)?);
                if matches!(self.settle(r)?, Settled::Edited) {
                    return Ok(None);
                }
            }
        }
        // Failed jobs that left without showing in the live set or starting
        // a run (failed -> queued -> cancelled between two refreshes): the
        // ones the commits can have touched, or all of them by count.
        let failed_ok = match changes {
            Changes::Unknown => self.check_failed(conn)?,
            Changes::Rows(rows) => {
                let touched = self.failed.within(rows);
                self.settle_by_key(conn, &touched)?
            }
        };
        if !failed_ok {
            return Ok(None);
        }
        let top: i64 = conn.query_row(MAX_JOB_SQL, [], |r| r.get(0))?;
        if top < self.max_id {
            return Ok(None); // the newest jobs were deleted
        }
        self.max_id = max_id.max(top);
        self.live = live;
        Ok(Some(self.terminal.clone().plus(&self.failed.tally()).plus(&live_now)))
    }
}

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
