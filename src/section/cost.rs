//! `cost`: the stored cost of every running job's latest run, and totals over all runs.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::Serialize;

use crate::section::metric::{Family, Labels, Registry, count_total, counter, labels};
use crate::section::{Changes, Incremental, Kept, LoadError, Section, SectionName};
use crate::source::db::{MAX_SAFE_INTEGER, RunCost, RunningJob, count, running_jobs};

/// The cost section; it keeps totals of finished runs between refreshes.
#[derive(Debug, Default)]
pub struct Cost {
    state: Kept<RunsState>,
}

impl Cost {
    /// A cost section with nothing kept yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The running jobs' latest runs, with their stored cost.
    fn running(conn: &Connection) -> Result<Vec<CostRunning>, LoadError> {
        Ok(running_jobs(conn)?.iter().map(CostRunning::of).collect())
    }
}

impl CostRunning {
    /// The entry of one running job (the same row the agents section reads).
    pub fn of(job: &RunningJob) -> Self {
        let run = job.run.as_ref();
        CostRunning {
            run_id: run.map(|r| r.run_id),
            job_id: job.job_id,
            agent: job.agent(),
            cost: run.map(|r| r.cost.clone()).unwrap_or_default(),
        }
    }
}

impl CostView {
    /// This view with `running` taken from the agents section's rows, so that
    /// an envelope pairs them entry by entry (README, "The envelope").
    pub fn paired_with(&self, agents: &[crate::section::agents::AgentRow]) -> Self {
        CostView {
            running: agents.iter().map(|a| CostRunning::of(a.job())).collect(),
            aggregate: self.aggregate.clone(),
        }
    }
}

/// A running job's latest run, with its stored (possibly NULL) cost.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct CostRunning {
    /// The latest run's id.
    pub run_id: Option<i64>,
    /// `jobs.id`.
    pub job_id: i64,
    /// The run's agent, or `jobs.agent` when there is no run yet.
    pub agent: Option<String>,
    /// The run's stored cost and token columns (all `None` without a run).
    #[serde(flatten)]
    pub cost: RunCost,
}

/// Totals over every `agent_runs` row; NULLs and bad values are skipped.
#[derive(Debug, Clone, PartialEq, Default, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct CostAggregate {
    /// Number of rows.
    pub runs: u64,
    /// Sum of `cost_usd`.
    pub cost_usd: f64,
    /// Sum of `input_tokens`.
    pub input_tokens: u64,
    /// Sum of `output_tokens`.
    pub output_tokens: u64,
    /// Sum of `cache_read_tokens`.
    pub cache_read_tokens: u64,
    /// Sum of `cache_creation_tokens`.
    pub cache_creation_tokens: u64,
}

/// What a refresh reads (it has no ages, so it is also the view).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct CostView {
    /// One entry per running agent, in the agents section's order.
    pub running: Vec<CostRunning>,
    /// Totals over all runs.
    pub aggregate: CostAggregate,
}

// Only values of the right type and range are summed (a text or negative token
// count is bad data, skipped like NULL). Costs are summed as whole dollars
// plus nano-dollars and tokens as integers, so that the totals do not depend on
// the order rows are added in: the incremental path adds runs as they finish,
// the reference over all rows in one pass, and both must give the same value.
// TOTAL() cannot overflow, unlike SUM(); its sums of integers are exact up to
// 2^53, and the totals are capped there anyway.
macro_rules! totals_sql {
    ($filter:literal) => {
        concat!(
            "SELECT COUNT(*),
       TOTAL(CASE WHEN typeof(cost_usd) IN ('real', 'integer') AND cost_usd BETWEEN 0 AND ?1
                  THEN CAST(cost_usd AS INTEGER) END),
       TOTAL(CASE WHEN typeof(cost_usd) IN ('real', 'integer') AND cost_usd BETWEEN 0 AND ?1
                  THEN CAST((cost_usd - CAST(cost_usd AS INTEGER)) * 1000000000 + 0.5 AS INTEGER) END),
       TOTAL(CASE WHEN typeof(input_tokens) = 'integer' AND input_tokens BETWEEN 0 AND ?1 THEN input_tokens END),
       TOTAL(CASE WHEN typeof(output_tokens) = 'integer' AND output_tokens BETWEEN 0 AND ?1 THEN output_tokens END),
       TOTAL(CASE WHEN typeof(cache_read_tokens) = 'integer' AND cache_read_tokens BETWEEN 0 AND ?1 THEN cache_read_tokens END),
       TOTAL(CASE WHEN typeof(cache_creation_tokens) = 'integer' AND cache_creation_tokens BETWEEN 0 AND ?1 THEN cache_creation_tokens END)
  FROM agent_runs",
            $filter
        )
    };
}
/// The reference: totals over every run.
const AGGREGATE_SQL: &str = totals_sql!("");
/// Totals over the finished runs up to a rowid (building the incremental state).
const FINISHED_SQL: &str = totals_sql!(" WHERE finished_at IS NOT NULL AND id <= ?2");
/// The unfinished runs up to a rowid, one by one (building the incremental state).
const OPEN_SQL: &str = "SELECT id, finished_at IS NOT NULL, cost_usd, input_tokens, output_tokens, cache_read_tokens,
       cache_creation_tokens
  FROM agent_runs WHERE finished_at IS NULL AND id <= ?1 ORDER BY id";
/// Runs inserted since the last refresh (a rowid range).
const NEW_SQL: &str = "SELECT id, finished_at IS NOT NULL, cost_usd, input_tokens, output_tokens, cache_read_tokens,
       cache_creation_tokens
  FROM agent_runs WHERE id > ?1 ORDER BY id";
/// The runs that were unfinished at the last refresh, by key.
const KNOWN_SQL: &str = "SELECT id, finished_at IS NOT NULL, cost_usd, input_tokens, output_tokens, cache_read_tokens,
       cache_creation_tokens
  FROM agent_runs WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id";

fn total(v: ValueRef<'_>) -> u128 {
    match v {
        ValueRef::Real(t) if t.is_finite() && t >= 0.0 => t as u128,
        _ => 0,
    }
}

/// Run totals in integer units, so that adding in any order gives one result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    runs: u64,
    dollars: u128,
    nanos: u128,
    tokens: [u128; 4],
}

impl Totals {
    /// One run's valid values, split as the SQL above splits them.
    fn add_row(&mut self, row: &rusqlite::Row<'_>, first: usize) -> Result<(), rusqlite::Error> {
        self.runs += 1;
        if let Some(x) = crate::source::db::amount(row.get_ref(first)?).filter(|x| *x <= MAX_SAFE_INTEGER as f64) {
            let whole = x.trunc();
            self.dollars += whole as u128;
            // CAST((x - CAST(x AS INTEGER)) * 1000000000 + 0.5 AS INTEGER), operation by operation.
            self.nanos += ((x - whole) * 1_000_000_000.0 + 0.5) as u128;
        }
        for (i, t) in self.tokens.iter_mut().enumerate() {
            *t += count(row.get_ref(first + 1 + i)?).map_or(0, u128::from);
        }
        Ok(())
    }

    /// The totals of one `totals_sql!` row.
    fn from_sql(r: &rusqlite::Row<'_>) -> Result<Self, rusqlite::Error> {
        Ok(Totals {
            runs: count(r.get_ref(0)?).unwrap_or(0),
            dollars: total(r.get_ref(1)?),
            nanos: total(r.get_ref(2)?),
            tokens: [total(r.get_ref(3)?), total(r.get_ref(4)?), total(r.get_ref(5)?), total(r.get_ref(6)?)],
        })
    }

    fn plus(mut self, other: &Totals) -> Totals {
        self.runs += other.runs;
        self.dollars += other.dollars;
        self.nanos += other.nanos;
        for (t, o) in self.tokens.iter_mut().zip(other.tokens) {
            *t += o;
        }
        self
    }

    /// What is served: sums held to the bound every served integer obeys.
    fn aggregate(&self) -> CostAggregate {
        let cap = |n: u128| u64::try_from(n).unwrap_or(u64::MAX).min(MAX_SAFE_INTEGER as u64);
        let nanos = self.dollars.saturating_mul(1_000_000_000).saturating_add(self.nanos);
        // The double nearest the exact decimal sum (parsing it gives that),
        // so it prints as that decimal: 23.794935, not 23.794935000000004.
        let decimal = format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000);
        let cost_usd = decimal.parse::<f64>().unwrap_or(f64::MAX).min(MAX_SAFE_INTEGER as f64);
        CostAggregate {
            runs: self.runs,
            cost_usd,
            input_tokens: cap(self.tokens[0]),
            output_tokens: cap(self.tokens[1]),
            cache_read_tokens: cap(self.tokens[2]),
            cache_creation_tokens: cap(self.tokens[3]),
        }
    }
}

/// What the cost section keeps between refreshes: totals over the runs that
/// had finished (a finished run never changes under the write pattern), the
/// runs that had not with what each adds to the totals (under the pattern
/// nothing but its count, until it finishes), and the highest rowid seen.
#[derive(Debug, Default)]
struct RunsState {
    max_id: i64,
    finished: Totals,
    /// The unfinished runs' ids, sorted.
    open: Vec<i64>,
    /// What each of them adds (by position in `open`).
    open_each: Vec<Totals>,
    /// Their sum.
    open_sum: Totals,
}

impl Totals {
    /// `self` less `other`, which it includes (exact integers: the order of adding does not matter).
    fn minus(mut self, other: &Totals) -> Totals {
        self.runs = self.runs.saturating_sub(other.runs);
        self.dollars = self.dollars.saturating_sub(other.dollars);
        self.nanos = self.nanos.saturating_sub(other.nanos);
        for (t, o) in self.tokens.iter_mut().zip(other.tokens) {
            *t = t.saturating_sub(o);
        }
        self
    }

    /// One run's values (a row of `NEW_SQL`/`KNOWN_SQL`).
    fn of_row(row: &rusqlite::Row<'_>) -> Result<Totals, rusqlite::Error> {
        let mut t = Totals::default();
        t.add_row(row, 2)?;
        Ok(t)
    }
}

impl Incremental for RunsState {
    type Out = Totals;

    /// Derives the state from every row (the unfinished runs' values are
    /// read by the first advance).
    fn build(conn: &Connection) -> Result<RunsState, LoadError> {
        let max_id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM agent_runs", [], |r| r.get(0))?;
        let finished = conn.prepare_cached(FINISHED_SQL)?.query_row((MAX_SAFE_INTEGER, max_id), Totals::from_sql)?;
        let mut open = Vec::new();
        let mut stmt = conn.prepare_cached(OPEN_SQL)?;
        let mut rows = stmt.query([max_id])?;
        while let Some(row) = rows.next()? {
            open.push(row.get(0)?);
        }
        let open_each = vec![Totals::default(); open.len()];
        Ok(RunsState { max_id, finished, open, open_each, open_sum: Totals::default() })
    }

    /// Folds in what changed since the state was taken: the unfinished runs
    /// the commits can have touched, read by key, and the runs inserted
    /// since; returns the totals over every run now, or `None` when a row the
    /// state counts on is gone.
    fn advance(&mut self, conn: &Connection, changes: &Changes) -> Result<Option<Totals>, LoadError> {
        if matches!(changes, Changes::Unknown) {
            // Every unfinished run is read again: their sum is made afresh.
            self.open_each.iter_mut().for_each(|t| *t = Totals::default());
            self.open_sum = Totals::default();
        }
        let look = changes.among(&self.open);
        let mut done = Vec::new();
        if !look.is_empty() {
            let ids = serde_json::to_string(&look).map_err(|e| LoadError::Other(e.to_string()))?;
            let mut stmt = conn.prepare_cached(KNOWN_SQL)?;
            let mut rows = stmt.query([ids])?;
            let mut seen = 0;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let Ok(at) = self.open.binary_search(&id) else { return Ok(None) };
                let now = Totals::of_row(row)?;
                self.open_sum = self.open_sum.minus(&self.open_each[at]);
                if row.get::<_, bool>(1)? {
                    self.finished = self.finished.plus(&now);
                    done.push(at);
                } else {
                    self.open_sum = self.open_sum.plus(&now);
                    self.open_each[at] = now;
                }
                seen += 1;
            }
            if seen != look.len() {
                return Ok(None); // an unfinished run was deleted
            }
        }
        if !done.is_empty() {
            let mut keep = vec![true; self.open.len()];
            done.iter().for_each(|at| keep[*at] = false);
            let mut i = 0;
            self.open.retain(|_| (keep[i], i += 1).0);
            let mut i = 0;
            self.open_each.retain(|_| (keep[i], i += 1).0);
        }
        let mut stmt = conn.prepare_cached(NEW_SQL)?;
        let mut rows = stmt.query([self.max_id])?;
        let mut max_id = self.max_id;
        while let Some(row) = rows.next()? {
            max_id = row.get(0)?;
            let now = Totals::of_row(row)?;
            if row.get::<_, bool>(1)? {
                self.finished = self.finished.plus(&now);
            } else {
                self.open.push(max_id);
                self.open_each.push(now);
                self.open_sum = self.open_sum.plus(&now);
            }
        }
        drop(rows);
        if max_id == self.max_id {
            // Nothing new: the newest row must still be there (else rows were pruned from the top).
            let top: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM agent_runs", [], |r| r.get(0))?;
            if top < self.max_id {
                return Ok(None);
            }
        }
        self.max_id = max_id;
        Ok(Some(self.finished.plus(&self.open_sum)))
    }
}

impl Section for Cost {
    const NAME: SectionName = SectionName::COST;
    type Data = CostView;
    type View = CostView;
    const STATEMENTS: &'static [&'static str] = &[crate::source::db::RUNNING_JOBS_SQL, AGGREGATE_SQL];
    const ROWS_SQL: Option<&'static str> = Some("SELECT COUNT(*) FROM agent_runs");

    fn load(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        let running = Self::running(conn)?;
        let aggregate = conn.prepare_cached(AGGREGATE_SQL)?.query_row([MAX_SAFE_INTEGER], Totals::from_sql)?;
        Ok(CostView { running, aggregate: aggregate.aggregate() })
    }

    fn refresh(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        self.refresh_since(conn, &Changes::Unknown)
    }

    fn refresh_since(&self, conn: &Connection, changes: &Changes) -> Result<Self::Data, LoadError> {
        let running = Self::running(conn)?;
        let totals = self.state.refresh(conn, "agent_runs", changes)?;
        Ok(CostView { running, aggregate: totals.aggregate() })
    }

    fn forget(&self) {
        self.state.forget();
    }

    fn view(data: &Self::Data, _generated_at: DateTime<Utc>) -> Self::View {
        data.clone()
    }

    fn expose(cost: &Self::View, _: Option<u64>, registry: &mut Registry) {
        let agg = &cost.aggregate;
        registry.register("orch_agent_runs", "Agent runs recorded", count_total(agg.runs));
        registry.register("orch_cost_usd", "Cost of all agent runs, USD", counter(agg.cost_usd));
        let tokens = Family::<Labels, prometheus_client::metrics::counter::Counter>::default();
        for (kind, n) in [
            ("input", agg.input_tokens),
            ("output", agg.output_tokens),
            ("cache_read", agg.cache_read_tokens),
            ("cache_creation", agg.cache_creation_tokens),
        ] {
            tokens.get_or_create(&labels(&[("kind", kind)])).inc_by(n);
        }
        registry.register("orch_tokens", "Tokens of all agent runs, by kind", tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_sum_has_no_float_noise() {
        let t = Totals { dollars: 23, nanos: 794_935_000, ..Totals::default() };
        assert_eq!(t.aggregate().cost_usd.to_string(), "23.794935");
        let t = Totals { nanos: 300_000_000, ..Totals::default() };
        assert_eq!(t.aggregate().cost_usd.to_string(), "0.3", "0.1 + 0.1 + 0.1");
        let t = Totals { nanos: 2_500_000_000, ..Totals::default() };
        assert_eq!(t.aggregate().cost_usd, 2.5, "nanos past a dollar carry");
    }
}
