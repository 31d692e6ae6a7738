//! The same raw signal as the JSON envelope, in the Prometheus text format
//! (0.0.4) or OpenMetrics 1.0, built with `prometheus-client`, plus the
//! mirror's own telemetry.
//!
//! A section that is `null` in JSON has no series here (not zeros); series of
//! agents that stopped running disappear at once, because every scrape builds
//! its registry afresh from one envelope. Stages are aggregated per stage, so
//! the number of series is bounded by stages and running agents.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::envelope::{Envelope, SectionState};
use crate::mirror::MirrorHandle;
use crate::section::SectionName;

/// `Content-Type` of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which exposition format a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `accept` names it, otherwise the Prometheus text format.
    pub fn from_accept(accept: &str) -> Self {
        if accept.to_ascii_lowercase().contains("application/openmetrics-text") {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => TEXT_CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Whether a `/metrics` request's `Accept` asks for an exposition: it names a
/// Prometheus or OpenMetrics text type and does not name `application/json`.
pub fn wants_exposition(accept: &str) -> bool {
    let a = accept.to_ascii_lowercase();
    !a.contains("application/json") && (a.contains("application/openmetrics-text") || a.contains("text/plain"))
}

/// Refresh durations per section, shared by the actors (which observe) and the exposition.
pub(crate) type DurationFamily = Family<Vec<(String, String)>, Histogram, fn() -> Histogram>;

/// One section's refresh-duration histogram: 100 µs .. ~26 s, from an
/// unchanged refresh to a slow scan of a big table.
pub(crate) fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 4.0, 10))
}

pub(crate) fn duration_family() -> DurationFamily {
    Family::new_with_constructor(duration_histogram)
}

pub(crate) fn section_label(section: SectionName) -> Vec<(String, String)> {
    vec![("section".to_owned(), section.as_str().to_owned())]
}

type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;
type CounterF = Counter<f64, AtomicU64>;

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// Adds the raw-signal families of `envelope` to `registry`.
fn raw_signal(registry: &mut Registry, e: &Envelope) {
    if let Some(stages) = &e.stages {
        // Per stage: how many tasks, and the oldest parseable age.
        let mut per_stage: std::collections::BTreeMap<String, (i64, Option<f64>)> = Default::default();
        for s in stages {
            let entry = per_stage.entry(s.stage.clone().unwrap_or_default()).or_default();
            entry.0 += 1;
            entry.1 = match (entry.1, s.age_in_stage_s) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        let active = Family::<Labels, Gauge>::default();
        let oldest = Family::<Labels, GaugeF>::default();
        for (stage, (n, max_age)) in per_stage {
            let l = labels(&[("stage", stage)]);
            active.get_or_create(&l).set(n);
            if let Some(age) = max_age {
                oldest.get_or_create(&l).set(age);
            }
        }
        registry.register("orch_tasks_active", "Tasks in each stage that is neither done nor cancelled", active);
        registry.register("orch_task_stage_age_seconds_max", "Longest time a task has been in each stage", oldest);
    }
    if let Some(q) = &e.queue {
        let jobs = Family::<Labels, Gauge>::default();
        for (status, n) in &q.counts.0 {
            jobs.get_or_create(&labels(&[("status", status.clone())])).set(i64::try_from(*n).unwrap_or(i64::MAX));
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
    if let Some(agents) = &e.agents {
        registry.register("orch_agents_running", "Running jobs (agents)", gauge(agents.len() as f64));
        let cpu = Family::<Labels, CounterF>::default();
        let runtime = Family::<Labels, GaugeF>::default();
        for a in agents {
            let l = labels(&[
                ("agent", a.agent.clone().unwrap_or_default()),
                ("job_id", a.job_id.to_string()),
                ("run_id", a.run_id.map(|r| r.to_string()).unwrap_or_default()),
            ]);
            if let (Some(ticks), Some(tck)) = (a.cpu_ticks, e.clk_tck.filter(|t| *t > 0)) {
                cpu.get_or_create(&l).inc_by(ticks as f64 / tck as f64);
            }
            if let Some(rt) = a.runtime_s {
                runtime.get_or_create(&l).set(rt);
            }
        }
        registry.register("orch_agent_cpu_seconds", "CPU time of the agent's process (utime + stime)", cpu);
        registry.register("orch_agent_runtime_seconds", "Time since the job started", runtime);
    }
    if let Some(cost) = &e.cost {
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
            tokens.get_or_create(&labels(&[("kind", kind.to_owned())])).inc_by(n as f64);
        }
        registry.register("orch_tokens", "Tokens of all agent runs, by kind", tokens);
    }
}

fn gauge(v: f64) -> GaugeF {
    let g = GaugeF::default();
    g.set(v);
    g
}

fn counter(v: f64) -> CounterF {
    let c = CounterF::default();
    c.inc_by(v);
    c
}

/// Adds the mirror's own telemetry: present from start-up, one series per section.
fn self_telemetry(registry: &mut Registry, handle: &MirrorHandle, e: Option<&Envelope>) {
    let up = Family::<Labels, Gauge>::default();
    let age = Family::<Labels, GaugeF>::default();
    if let Some(e) = e {
        let states: [(SectionName, &SectionState); 4] = [
            (SectionName::Stages, &e.sections.stages),
            (SectionName::Queue, &e.sections.queue),
            (SectionName::Agents, &e.sections.agents),
            (SectionName::Cost, &e.sections.cost),
        ];
        for (name, state) in states {
            up.get_or_create(&section_label(name)).set(i64::from(state.status.has_data()));
            if let Some(ms) = state.age_ms {
                age.get_or_create(&section_label(name)).set(ms as f64 / 1000.0);
            }
        }
    }
    registry.register("orchmirror_section_up", "1 when the section serves data (ok or stale)", up);
    registry.register("orchmirror_section_age_seconds", "Age of the section's last successful refresh", age);
    if let Some(durations) = handle.refresh_durations() {
        registry.register("orchmirror_refresh_duration_seconds", "Duration of section refreshes", durations);
    }
    let counters = handle.refresh_counters();
    let restarts = handle.restarts();
    let subscribers = handle.subscriber_totals();
    let timeouts = handle.snapshot_timeouts();
    let per_section = |get: &dyn Fn(SectionName) -> u64| {
        let f = Family::<Labels, Counter>::default();
        if handle.enabled() {
            for s in SectionName::ALL {
                f.get_or_create(&section_label(s)).inc_by(get(s));
            }
        }
        f
    };
    let pick = |s: SectionName| match s {
        SectionName::Stages => (counters.stages, restarts.stages, subscribers.stages.dropped, timeouts.stages),
        SectionName::Queue => (counters.queue, restarts.queue, subscribers.queue.dropped, timeouts.queue),
        SectionName::Agents => (counters.agents, restarts.agents, subscribers.agents.dropped, timeouts.agents),
        SectionName::Cost => (counters.cost, restarts.cost, subscribers.cost.dropped, timeouts.cost),
    };
    registry.register("orchmirror_refresh_errors", "Failed refreshes", per_section(&|s| pick(s).0.failed));
    registry.register(
        "orchmirror_refresh_skipped",
        "Refreshes that skipped their queries because nothing was committed",
        per_section(&|s| pick(s).0.skipped),
    );
    registry.register(
        "orchmirror_snapshot_timeouts",
        "Snapshot requests the section's actor did not answer in time",
        per_section(&|s| pick(s).3),
    );
    registry.register(
        "orchmirror_actor_restarts",
        "Section actors re-spawned after dying",
        per_section(&|s| pick(s).1),
    );
    registry.register(
        "orchmirror_subscriber_drops",
        "Updates dropped because a subscriber's mailbox was full",
        per_section(&|s| pick(s).2),
    );
    registry.register(
        "orchmirror_build",
        "orchmirror build information",
        Info::new(vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]),
    );
}

/// The exposition for one scrape.
pub async fn render(handle: &MirrorHandle, format: Format) -> Result<String, std::fmt::Error> {
    let envelope = handle.snapshot().await;
    let mut registry = Registry::default();
    if let Some(e) = &envelope {
        raw_signal(&mut registry, e);
    }
    self_telemetry(&mut registry, handle, envelope.as_ref());
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(match format {
        Format::OpenMetrics => out,
        Format::Text => to_text_004(&out),
    })
}

/// Rewrites OpenMetrics text as the Prometheus text format 0.0.4: no `# EOF`
/// or `# UNIT`, counters declared under their `_total` sample name, info
/// metrics as gauges named `_info` (what Prometheus's 0.0.4 parser expects).
pub fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_formats() {
        let prometheus_default = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_exposition(prometheus_default));
        assert_eq!(Format::from_accept(prometheus_default), Format::OpenMetrics);
        assert!(wants_exposition("text/plain"));
        assert_eq!(Format::from_accept("text/plain;version=0.0.4"), Format::Text);
        for json in ["*/*", "", "application/json", "text/plain, application/json", "text/html,*/*;q=0.8"] {
            assert!(!wants_exposition(json), "{json}");
        }
    }

    #[test]
    fn rewrites_openmetrics_as_text_004() {
        let om = "# HELP a Things.\n# TYPE a counter\na_total 3\n# HELP b_seconds Time.\n# TYPE b_seconds gauge\n# UNIT b_seconds seconds\nb_seconds 1.5\n# HELP v Build.\n# TYPE v info\nv_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP a_total Things.\n# TYPE a_total counter\na_total 3\n# HELP b_seconds Time.\n# TYPE b_seconds gauge\nb_seconds 1.5\n# HELP v_info Build.\n# TYPE v_info gauge\nv_info{version=\"1\"} 1\n"
        );
    }
}
