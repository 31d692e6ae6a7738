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
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::runtime::envelope::Envelope;
use crate::runtime::handle::MirrorHandle;
use crate::runtime::stats::section_label;
use crate::section::SectionName;
use crate::serve::stream::StreamTotals;

/// `Content-Type` of the Prometheus text format.
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which exposition format a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `accept` names it, otherwise the Prometheus text format.
    pub(crate) fn from_accept(accept: &str) -> Self {
        let om = quality(accept, "application/openmetrics-text");
        if om > 0.0 && om >= quality(accept, "text/plain") { Self::OpenMetrics } else { Self::Text }
    }

    /// The `Content-Type` of this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Text => TEXT_CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Whether a `/metrics` request's `Accept` asks for an exposition: it names a
/// Prometheus or OpenMetrics text type with a higher q-value than
/// `application/json` (a tie, or wildcards alone, get JSON).
pub(crate) fn wants_exposition(accept: &str) -> bool {
    let exposition = quality(accept, "application/openmetrics-text").max(quality(accept, "text/plain"));
    exposition > 0.0 && exposition > quality(accept, "application/json")
}

/// The q-value `accept` gives `media_type` by name (its parameters, such as
/// `version`, aside): the highest among its entries, 1 when an entry has no
/// `q`, 0 when it is not named (wildcards do not name it) or the `q` does not parse.
fn quality(accept: &str, media_type: &str) -> f32 {
    accept
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';');
            let name = parts.next()?.trim();
            if !name.eq_ignore_ascii_case(media_type) {
                return None;
            }
            let q = parts.filter_map(|p| p.trim().strip_prefix("q=")).next();
            Some(
                q.map_or(Some(1.0), |q| q.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)))
                    .unwrap_or(0.0),
            )
        })
        .fold(0.0, f32::max)
}

type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

/// Adds every section's raw-signal families (each section supplies its own).
#[cfg(test)]
fn raw_signal(registry: &mut Registry, e: &Envelope) {
    for data in e.data.iter().filter_map(|(_, d)| d.as_ref()) {
        data.expose(e.clk_tck, registry);
    }
}

/// Adds the mirror's own telemetry: present from start-up, one series per section.
fn self_telemetry(registry: &mut Registry, handle: &MirrorHandle, streams: StreamTotals, e: Option<&Envelope>) {
    let up = Family::<Labels, Gauge>::default();
    let age = Family::<Labels, GaugeF>::default();
    if let Some(e) = e {
        for (name, state) in e.sections.iter() {
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
    let per_section = |get: &dyn Fn(SectionName) -> u64| {
        let f = Family::<Labels, Counter>::default();
        for s in handle.sections() {
            f.get_or_create(&section_label(s)).inc_by(get(s));
        }
        f
    };
    let counter_of = |s: SectionName| counters.get(s).copied().unwrap_or_default();
    registry.register("orchmirror_refresh_errors", "Failed refreshes", per_section(&|s| counter_of(s).failed));
    registry.register(
        "orchmirror_refresh_skipped",
        "Refreshes that skipped their queries because nothing was committed",
        per_section(&|s| counter_of(s).skipped),
    );
    let (timeouts, restarts, subscribers) = (handle.snapshot_timeouts(), handle.restarts(), handle.subscriber_totals());
    registry.register(
        "orchmirror_snapshot_timeouts",
        "Snapshot requests the section's actor did not answer in time",
        per_section(&|s| timeouts.get(s).copied().unwrap_or_default()),
    );
    registry.register(
        "orchmirror_actor_restarts",
        "Section actors re-spawned after dying",
        per_section(&|s| restarts.get(s).copied().unwrap_or_default()),
    );
    let reconciliations = handle.reconciliations();
    registry.register(
        "orchmirror_reconcile_drift",
        "Reconciliations whose full recomputation differed from the served values (history edits)",
        per_section(&|s| reconciliations.get(s).map_or(0, |r| r.drift)),
    );
    registry.register(
        "orchmirror_subscriber_drops",
        "Updates dropped because a subscriber's mailbox was full",
        per_section(&|s| subscribers.get(s).map_or(0, |t| t.dropped)),
    );
    let woken = Family::<Labels, Gauge>::default();
    for (s, mode) in handle.wake_modes().iter() {
        woken.get_or_create(&section_label(s)).set(i64::from(mode.on_commit()));
    }
    registry.register(
        "orchmirror_wake_on_commit",
        "1 when commits wake the section (a watch on the database's files), 0 when only its timer does (see /health)",
        woken,
    );
    let budget = handle.budget();
    let limiting = Gauge::<i64>::default();
    limiting.set(i64::from(budget.limiting));
    registry.register(
        "orchmirror_cpu_budget_limiting",
        "1 when the CPU budget (ORCH_CPU_BUDGET_PERCENT) delayed a refresh in the last two seconds: it, not \
         ORCH_COALESCE_MS, sets the gap between refreshes",
        limiting,
    );
    let delays = Counter::<u64>::default();
    delays.inc_by(budget.delays);
    registry.register("orchmirror_cpu_budget_delays", "Refreshes the CPU budget delayed", delays);
    let failures = Counter::<u64>::default();
    failures.inc_by(crate::serve::web_config::auth_failures());
    registry.register("orchmirror_http_auth_failures", "Requests refused for a missing or wrong password", failures);
    let throttled = Counter::<u64>::default();
    throttled.inc_by(crate::serve::web_config::auth_throttled());
    registry.register(
        "orchmirror_http_auth_throttled",
        "Requests answered 429 without a password check: every core was checking one, or the address failed too \
         often lately",
        throttled,
    );
    let reloads = Counter::<u64>::default();
    reloads.inc_by(crate::serve::web_config::reload_failures());
    registry.register(
        "orchmirror_web_config_reload_failures",
        "Changed web configuration files that were not valid (the last good one stayed in force)",
        reloads,
    );
    let last_ok = Gauge::<i64>::default();
    last_ok.set(i64::from(crate::serve::web_config::last_reload_successful()));
    registry.register(
        "orchmirror_web_config_last_reload_successful",
        "1 when the web configuration file in force is the file as it is now",
        last_ok,
    );
    let compressions = Family::<Labels, Counter>::default();
    for coding in crate::serve::compressed::codings() {
        compressions
            .get_or_create(&vec![("encoding".to_owned(), coding.token().to_owned())])
            .inc_by(crate::serve::compressed::made(coding));
    }
    registry.register(
        "orchmirror_shared_compressions",
        "Large /metrics bodies compressed (each made once per change, second and encoding, then shared)",
        compressions,
    );
    let refusals = Counter::<u64>::default();
    refusals.inc_by(crate::source::wal_guard_refusals());
    registry.register(
        "orchmirror_wal_guard_refusals",
        "Opens refused because the database's -wal/-shm files would be created, or were found, as this \
         process's and not the database owner's (the orchestrator could not write them)",
        refusals,
    );
    let left = Gauge::<i64>::default();
    left.set(i64::from(crate::source::wal_left_behind()));
    registry.register(
        "orchmirror_wal_left_behind",
        "1 when, after the mirror's last read, a non-empty -wal was beside the database with no connection \
         open on it: do not rename another file over the database until it is 0 (README, \"Replacing the \
         database while the mirror runs\")",
        left,
    );
    let open = Gauge::<i64>::default();
    open.set(i64::try_from(streams.open).unwrap_or(i64::MAX));
    registry.register("orchmirror_streams", "/metrics/stream clients open now", open);
    let max = Gauge::<i64>::default();
    max.set(i64::try_from(streams.max).unwrap_or(i64::MAX));
    registry.register(
        "orchmirror_streams_max",
        "How many /metrics/stream clients may be open at once (ORCH_MAX_STREAMS, or what the open-files limit leaves)",
        max,
    );
    let events = Counter::<u64>::default();
    events.inc_by(streams.events);
    registry.register("orchmirror_stream_events", "Events sent on /metrics/stream (heartbeats not counted)", events);
    let resyncs = Counter::<u64>::default();
    resyncs.inc_by(streams.resyncs);
    registry.register(
        "orchmirror_stream_resyncs",
        "Times a slow /metrics/stream client's pending events were dropped for a resync and a fresh envelope",
        resyncs,
    );
    process_metrics(registry);
    registry.register(
        "orchmirror_build",
        "orchmirror build information",
        Info::new(vec![
            ("version".to_owned(), crate::source::build::BUILD.version.to_owned()),
            ("revision".to_owned(), crate::source::build::BUILD.revision.to_owned()),
            ("rustc_version".to_owned(), crate::source::build::BUILD.rustc_version.to_owned()),
        ]),
    );
}

/// `process_*`, named and typed as every Prometheus client library exports
/// them (Linux; absent elsewhere).
fn process_metrics(registry: &mut Registry) {
    let Some(p) = crate::source::procstat::own_usage() else { return };
    let cpu = Counter::<f64, AtomicU64>::default();
    cpu.inc_by(p.cpu_seconds);
    registry.register("process_cpu_seconds", "Total user and system CPU time spent in seconds", cpu);
    let gauge = |v: f64| {
        let g = GaugeF::default();
        g.set(v);
        g
    };
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        gauge(p.resident_memory_bytes as f64),
    );
    registry.register(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        gauge(p.virtual_memory_bytes as f64),
    );
    registry.register("process_open_fds", "Number of open file descriptors", gauge(p.open_fds as f64));
    if let Some(max) = p.max_fds {
        registry.register("process_max_fds", "Maximum number of open file descriptors", gauge(max as f64));
    }
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        gauge(p.start_time_seconds),
    );
}

/// The exposition for one scrape.
pub(crate) async fn render(
    handle: &MirrorHandle,
    streams: StreamTotals,
    format: Format,
) -> Result<String, std::fmt::Error> {
    let envelope = handle.snapshot().await;
    let mut out = String::new();
    // The raw signal's families are encoded once per section value and
    // shared; only the mirror's own telemetry is encoded per scrape.
    if let Some(e) = &envelope {
        for data in e.data.iter().filter_map(|(_, d)| d.as_ref()) {
            out.push_str(&data.exposition(e.clk_tck)?);
        }
    }
    let mut registry = Registry::default();
    self_telemetry(&mut registry, handle, streams, envelope.as_ref());
    let mut own = String::new();
    encode(&mut own, &registry)?;
    out.push_str(&crate::section::metric::stable_order(&own));
    Ok(match format {
        Format::OpenMetrics => out,
        Format::Text => to_text_004(&out),
    })
}

/// Rewrites OpenMetrics text as the Prometheus text format 0.0.4: no `# EOF`
/// or `# UNIT`, counters declared under their `_total` sample name, info
/// metrics as gauges named `_info` (what Prometheus's 0.0.4 parser expects).
pub(crate) fn to_text_004(openmetrics: &str) -> String {
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

    /// The shared per-section encodings, joined, are what encoding every
    /// family in one registry gives (the reference).
    #[test]
    fn shared_section_expositions_equal_one_registry() -> Result<(), Box<dyn std::error::Error>> {
        use crate::runtime::messages::{Answer, SectionReply};
        use crate::section::{Agents, Cost, Queue, Section, Stages};
        use std::sync::Arc;
        let (_dir, conn) = crate::source::db::test_db(
            "INSERT INTO tasks (work_item_id, stage) VALUES ('A', 'review'), ('B', ''), ('C', 'develop');
             INSERT INTO jobs (agent, status, attempts, started_at) VALUES ('dev', 'running', 2, datetime('now')),
                                                                           ('dev', 'queued', 0, NULL);
             INSERT INTO agent_runs (job_id, agent, pid, cost_usd, input_tokens) VALUES (1, 'dev', 1, 0.5, 10);",
        )?;
        let at = chrono::Utc::now();
        let answers = vec![
            Answer::of::<Stages>(Ok(SectionReply::ok(Arc::new(Stages.load(&conn)?), at, 1))),
            Answer::of::<Queue>(Ok(SectionReply::ok(Arc::new(Queue::new().load(&conn)?), at, 1))),
            Answer::of::<Agents>(Ok(SectionReply::ok(
                Arc::new(Agents::new(std::time::Duration::from_secs(10)).load(&conn)?),
                at,
                1,
            ))),
            Answer::of::<Cost>(Ok(SectionReply::ok(Arc::new(Cost::new().load(&conn)?), at, 1))),
        ];
        let e = crate::runtime::envelope::assemble(
            answers,
            crate::runtime::clock::Clock::now(),
            std::time::Duration::from_millis(200),
        );
        let mut registry = Registry::default();
        raw_signal(&mut registry, &e);
        let mut reference = String::new();
        encode(&mut reference, &registry)?;
        let mut shared = String::new();
        for data in e.data.iter().filter_map(|(_, d)| d.as_ref()) {
            shared.push_str(&data.exposition(e.clk_tck)?);
        }
        shared.push_str("# EOF\n");
        assert!(reference.contains("orch_tasks_active"), "{reference}");
        // The same lines; a family's series come in hash order (their order
        // is not part of the format), so compare them sorted.
        let sorted = |s: &str| {
            let mut lines: Vec<String> = s.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&shared), sorted(&reference));
        assert!(shared.ends_with("# EOF\n") && shared.matches("# EOF").count() == 1);
        Ok(())
    }

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
        // q-values count (issue 24): a type refused with q=0 is not chosen.
        let refused = "application/openmetrics-text;q=0, text/plain";
        assert!(wants_exposition(refused));
        assert_eq!(Format::from_accept(refused), Format::Text);
        assert!(!wants_exposition("text/plain;q=0"));
        assert!(!wants_exposition("text/plain;q=0.5, application/json"), "JSON preferred");
        assert!(wants_exposition("text/plain, application/json;q=0.5"), "text preferred");
        assert_eq!(Format::from_accept("text/plain;q=1, application/openmetrics-text;q=0.5"), Format::Text);
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
