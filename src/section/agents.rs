//! `agents`: one entry per running job, with its latest run's process and CPU ticks.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

use crate::section::metric::{CounterF, Family, GaugeF, Labels, Registry, count_gauge, labels};
use crate::section::{LoadError, Section, SectionName};
use crate::source::db::{RunningJob, running_jobs};
use crate::source::procstat::{self, CpuSample};
use crate::source::time::{age_seconds, format_millis};

/// The agents section; samples `/proc` for every running agent on each refresh.
#[derive(Debug)]
pub struct Agents {
    pid_start_tolerance: Duration,
}

impl Agents {
    /// An agents section whose pid-reuse guard allows `pid_start_tolerance`.
    pub fn new(pid_start_tolerance: Duration) -> Self {
        Self { pid_start_tolerance }
    }

    /// `job`'s process's ticks, stamped `at`: one pass over the running
    /// agents reads every process within milliseconds and stamps all of them
    /// with the time it began, so that a pass whose ticks did not move
    /// differs from the last only in that one time (the changes-only stream
    /// sends it once, not once per agent).
    fn sample(&self, job: &RunningJob, at: DateTime<Utc>) -> Result<Option<CpuSample>, std::io::Error> {
        let sample = match job.run.as_ref().and_then(|run| Some((run.pid?, run.started_at))) {
            Some((pid, started_at)) => procstat::sample(pid, started_at, self.pid_start_tolerance)?,
            None => None,
        };
        Ok(sample.map(|s| CpuSample { sampled_at: at, ..s }))
    }
}

/// Now, to the millisecond `cpu_sampled_at` is served with.
fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// A running job and the CPU ticks of its run's process.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    job: RunningJob,
    cpu: Option<CpuSample>,
}

impl AgentRow {
    /// The running job and its latest run, as read.
    pub fn job(&self) -> &RunningJob {
        &self.job
    }
}

/// One running agent in the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct AgentEntry {
    /// The run's agent, or `jobs.agent` when there is no run yet.
    pub agent: Option<String>,
    /// The latest run's id.
    pub run_id: Option<i64>,
    /// `jobs.id`.
    pub job_id: i64,
    /// `jobs.repo`.
    pub repo: Option<String>,
    /// The run's process id.
    pub pid: Option<i32>,
    /// `generated_at` − `jobs.started_at`, seconds.
    pub runtime_s: Option<f64>,
    /// The run's model.
    pub model: Option<String>,
    /// The run's effort.
    pub effort: Option<String>,
    /// utime + stime of `pid`, in clock ticks.
    pub cpu_ticks: Option<u64>,
    /// When `cpu_ticks` was read (UTC, milliseconds).
    pub cpu_sampled_at: Option<String>,
}

impl Section for Agents {
    const NAME: SectionName = SectionName::AGENTS;
    type Data = Vec<AgentRow>;
    type View = Vec<AgentEntry>;
    const STATEMENTS: &'static [&'static str] = &[crate::source::db::RUNNING_JOBS_SQL];
    const ROWS_SQL: Option<&'static str> = Some("SELECT COUNT(*) FROM jobs");

    fn load(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        let jobs = running_jobs(conn)?;
        let at = now_millis();
        // A /proc read that fails for the mirror's own reasons fails the
        // refresh (the section goes stale, saying why) rather than serving
        // `null`, which means the process is gone.
        jobs.into_iter()
            .map(|job| Ok(AgentRow { cpu: self.sample(&job, at).map_err(|e| LoadError::Other(e.to_string()))?, job }))
            .collect()
    }

    /// CPU ticks move on their own: sample `/proc` again for the same rows.
    /// When `/proc` cannot be read for the mirror's own reasons, the last
    /// samples stay (their `cpu_sampled_at` says how old they are).
    fn resample(&self, data: &Self::Data) -> Option<Self::Data> {
        let at = now_millis();
        data.iter().map(|row| Some(AgentRow { job: row.job.clone(), cpu: self.sample(&row.job, at).ok()? })).collect()
    }

    fn view(data: &Self::Data, generated_at: DateTime<Utc>) -> Self::View {
        data.iter()
            .map(|AgentRow { job, cpu }| {
                let run = job.run.as_ref();
                AgentEntry {
                    agent: job.agent(),
                    run_id: run.map(|r| r.run_id),
                    job_id: job.job_id,
                    repo: job.repo.clone(),
                    pid: run.and_then(|r| r.pid),
                    runtime_s: job.job_started_at.and_then(|s| age_seconds(s, generated_at)),
                    model: run.and_then(|r| r.model.clone()),
                    effort: run.and_then(|r| r.effort.clone()),
                    cpu_ticks: cpu.map(|c| c.ticks),
                    cpu_sampled_at: cpu.map(|c| format_millis(c.sampled_at)),
                }
            })
            .collect()
    }

    fn expose(agents: &Self::View, clk_tck: Option<u64>, registry: &mut Registry) {
        registry.register("orch_agents_running", "Running jobs (agents)", count_gauge(agents.len() as u64));
        let cpu = Family::<Labels, CounterF>::default();
        let runtime = Family::<Labels, GaugeF>::default();
        for a in agents {
            let (job_id, run_id) = (a.job_id.to_string(), a.run_id.map(|r| r.to_string()).unwrap_or_default());
            let l =
                labels(&[("agent", a.agent.as_deref().unwrap_or_default()), ("job_id", &job_id), ("run_id", &run_id)]);
            if let (Some(ticks), Some(tck)) = (a.cpu_ticks, clk_tck.filter(|t| *t > 0)) {
                cpu.get_or_create(&l).inc_by(ticks as f64 / tck as f64);
            }
            if let Some(rt) = a.runtime_s {
                runtime.get_or_create(&l).set(rt);
            }
        }
        registry.register("orch_agent_cpu_seconds", "CPU time of the agent's process (utime + stime)", cpu);
        registry.register("orch_agent_runtime_seconds", "Time since the job started", runtime);
    }
}
