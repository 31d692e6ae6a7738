//! `cost`: the stored cost of every running job's latest run, and totals over all runs.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::Serialize;

use crate::section::metric::{CounterF, Family, Labels, Registry, counter, labels};
use crate::section::{LoadError, Section, SectionName};
use crate::source::db::{MAX_SAFE_INTEGER, count, running_jobs};

/// The cost section.
#[derive(Debug, Default)]
pub struct Cost;

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
// count is bad data, skipped like NULL). TOTAL() cannot overflow, unlike SUM().
const AGGREGATE_SQL: &str = "
SELECT COUNT(*),
       TOTAL(CASE WHEN typeof(cost_usd) IN ('real', 'integer') AND cost_usd BETWEEN 0 AND ?1 THEN cost_usd END),
       TOTAL(CASE WHEN typeof(input_tokens) = 'integer' AND input_tokens BETWEEN 0 AND ?1 THEN input_tokens END),
       TOTAL(CASE WHEN typeof(output_tokens) = 'integer' AND output_tokens BETWEEN 0 AND ?1 THEN output_tokens END),
       TOTAL(CASE WHEN typeof(cache_read_tokens) = 'integer' AND cache_read_tokens BETWEEN 0 AND ?1 THEN cache_read_tokens END),
       TOTAL(CASE WHEN typeof(cache_creation_tokens) = 'integer' AND cache_creation_tokens BETWEEN 0 AND ?1 THEN cache_creation_tokens END)
  FROM agent_runs";

fn total(v: ValueRef<'_>) -> f64 {
    match v {
        ValueRef::Real(t) if t.is_finite() && t >= 0.0 => t,
        _ => 0.0,
    }
}

impl Section for Cost {
    const NAME: SectionName = SectionName::COST;
    type Data = CostView;
    type View = CostView;
    const STATEMENTS: &'static [&'static str] = &[crate::source::db::RUNNING_JOBS_SQL, AGGREGATE_SQL];
    const ROWS_SQL: Option<&'static str> = Some("SELECT COUNT(*) FROM agent_runs");

    fn load(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        let running = running_jobs(conn)?
            .into_iter()
            .map(|job| {
                let run = job.run.as_ref();
                let cost = run.map(|r| r.cost.clone()).unwrap_or_default();
                CostRunning {
                    run_id: run.map(|r| r.run_id),
                    job_id: job.job_id,
                    agent: run.and_then(|r| r.agent.clone()).or_else(|| job.job_agent.clone()),
                    cost_usd: cost.cost_usd,
                    input_tokens: cost.input_tokens,
                    output_tokens: cost.output_tokens,
                    cache_read_tokens: cost.cache_read_tokens,
                    cache_creation_tokens: cost.cache_creation_tokens,
                }
            })
            .collect();
        let aggregate = conn.prepare_cached(AGGREGATE_SQL)?.query_row([MAX_SAFE_INTEGER], |r| {
            Ok(CostAggregate {
                runs: count(r.get_ref(0)?).unwrap_or(0),
                cost_usd: total(r.get_ref(1)?),
                input_tokens: total(r.get_ref(2)?) as u64,
                output_tokens: total(r.get_ref(3)?) as u64,
                cache_read_tokens: total(r.get_ref(4)?) as u64,
                cache_creation_tokens: total(r.get_ref(5)?) as u64,
            })
        })?;
        Ok(CostView { running, aggregate })
    }

    fn view(data: &Self::Data, _generated_at: DateTime<Utc>) -> Self::View {
        data.clone()
    }

    fn expose(cost: &Self::View, _: Option<u64>, registry: &mut Registry) {
        let agg = &cost.aggregate;
        registry.register("orch_agent_runs", "Agent runs recorded", counter(agg.runs as f64));
        registry.register("orch_cost_usd", "Cost of all agent runs, USD", counter(agg.cost_usd));
        let tokens = Family::<Labels, CounterF>::default();
        for (kind, n) in [
            ("input", agg.input_tokens),
            ("output", agg.output_tokens),
            ("cache_read", agg.cache_read_tokens),
            ("cache_creation", agg.cache_creation_tokens),
        ] {
            tokens.get_or_create(&labels(&[("kind", kind)])).inc_by(n as f64);
        }
        registry.register("orch_tokens", "Tokens of all agent runs, by kind", tokens);
    }
}
