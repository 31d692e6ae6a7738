//! The queue's incremental state: the live jobs read each refresh, the
//! settled ones folded into counts once, and the failed jobs (which a retry
//! can move anywhere in history) kept in order with a histogram of attempts.
//! The section's full queries (`super`) stay the reference it is checked
//! against.

use rusqlite::Connection;

use super::tally::{Tally, status_key};
use rusqlite::types::ValueRef;

use crate::section::{ChangedRows, Changes, Incremental, LoadError};
use crate::source::db::{MAX_SAFE_INTEGER, count, integer, text};

// Under the orchestrator's write pattern, done and cancelled jobs never change
// again; a failed job changes only by a retry (failed -> queued); every other
// job (queued, running, paused, any other status) is live. A refresh reads the
// live ones, found through idx_jobs_status as the index ranges around 'cancelled',
// 'done' and 'failed' (a NULL status, possible only in a schema without NOT
// NULL, is its own lookup: `IS NULL` in the same OR would turn the plan into a
// table scan), and not the history.
pub(super) const LIVE_SQL: &str = "
SELECT id, status, attempts FROM jobs
 WHERE status < 'cancelled' OR (status > 'cancelled' AND status < 'done')
    OR (status > 'done' AND status < 'failed') OR status > 'failed'
UNION ALL
SELECT id, status, attempts FROM jobs WHERE status IS NULL";
/// Terminal jobs up to a rowid, aggregated (building the state).
pub(super) const TERMINAL_SQL: &str = "
SELECT status, COUNT(*),
       COUNT(CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 2 AND ?1 THEN 1 END),
       TOTAL(CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 2 AND ?1 THEN attempts - 1 END),
       MAX(CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND ?1 THEN attempts END)
  FROM jobs WHERE status IN ('done', 'cancelled') AND id <= ?2 GROUP BY status";
/// Failed jobs up to a rowid, one by one (building the state: a retry takes one out again).
pub(super) const FAILED_SQL: &str = "SELECT id, attempts FROM jobs WHERE status = 'failed' AND id <= ?1";
/// How many jobs are failed now, from the index alone (no row is read).
pub(super) const FAILED_COUNT_SQL: &str = "SELECT COUNT(*) FROM jobs WHERE status = 'failed'";
/// Which jobs are failed now, from the index alone.
pub(super) const FAILED_IDS_SQL: &str = "SELECT id FROM jobs WHERE status = 'failed'";
/// Jobs inserted since the last refresh that are already settled (a rowid range).
pub(super) const NEW_SETTLED_SQL: &str =
    "SELECT id, status, attempts FROM jobs WHERE id > ?1 AND status IN ('done', 'cancelled', 'failed')";
/// Jobs by key (ones that left the live set, or a failed one that may have been retried).
pub(super) const KNOWN_JOBS_SQL: &str =
    "SELECT id, status, attempts FROM jobs WHERE id IN (SELECT value FROM json_each(?1))";
pub(super) const MAX_JOB_SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM jobs";
/// The jobs that started since the last refresh: a job's start inserts its run
/// (README, "Freshness and exactness"), so a failed job retried and failed again between two
/// refreshes is among these.
pub(super) const NEW_RUNS_SQL: &str = "SELECT id, job_id FROM agent_runs WHERE id > ?1";
pub(super) const MAX_RUN_SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM agent_runs";

/// The failed jobs the queue keeps (a failed job changes only by a retry),
/// with their attempts (`None`: not a valid count), and how many have each
/// attempts count, so that their tally costs what changed, not how many there are.
#[derive(Debug, Default)]
pub(super) struct FailedJobs {
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
pub(super) struct JobsState {
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
pub(super) enum Settled {
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
