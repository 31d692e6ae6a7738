//! What tune found and advises: the report, and how it is printed.

use serde::Serialize;

use super::options::*;
use crate::section::SectionName;
use crate::source::commits::WakeMode;

/// One section's measurements and recommendation.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SectionReport {
    /// The section.
    pub section: SectionName,
    /// Rows the section's queries read (the table they scan).
    pub rows: i64,
    /// Timed refreshes, all rounds together.
    pub samples: usize,
    /// Median refresh time when the data changed (the incremental path,
    /// before the changed rows themselves), ms: the median of the rounds' medians.
    pub median_ms: f64,
    /// Each round's median, ms (how stable the figure is).
    pub round_medians_ms: Vec<f64>,
    /// 95th percentile over all rounds, ms.
    pub p95_ms: f64,
    /// Median refresh time when nothing changed (change detection, and the
    /// values that move without a commit, such as CPU ticks), ms.
    pub unchanged_median_ms: f64,
    /// Median time to derive everything again (a reconciliation), ms.
    pub reconcile_median_ms: f64,
    /// What one refresh that finds a change costs in the running mirror: the
    /// median plus the fixed cost per refresh ([`RuntimeCost::fixed_ms`]), ms.
    pub refresh_cost_ms: f64,
    /// The configured period, ms.
    pub current_period_ms: u64,
    /// CPU share of one core at the configured period if every refresh finds
    /// a change, fixed cost included, percent.
    pub cpu_percent_at_current: f64,
    /// The recommended period: the shortest on the 1-2-5 series whose
    /// refreshes, each finding a change, stay within this section's share of
    /// the budget, and never below the floor, ms.
    pub recommended_period_ms: u64,
}

/// The running mirror's own costs on this database, measured by running its
/// section actors (no HTTP server) in this process.
#[derive(Debug, Clone, Copy, Serialize)]
#[non_exhaustive]
pub struct RuntimeCost {
    /// CPU of the mirror between refreshes (timers, the supervision
    /// watchdog, the commit watch), percent of one core.
    pub idle_percent: f64,
    /// CPU per refresh of the running actors on an unchanged database, ms.
    pub refresh_ms: f64,
    /// What a refresh costs beyond its own queries: scheduling, the blocking
    /// pool's hand-over, the connection, the reply's bookkeeping
    /// (`refresh_ms` less the queries' unchanged time), ms.
    pub fixed_ms: f64,
    /// Refreshes counted while measuring `refresh_ms`.
    pub refreshes: u64,
    /// Under sustained commits, on a scratch copy; `None` where the copy or
    /// its writer failed (a schema the writer does not know).
    pub busy: Option<Busy>,
}

/// The running mirror under sustained commits: a scratch copy of the
/// database in the temporary directory, a writer committing the
/// orchestrator's pattern [`Options::commit_rate`] times a second, measured
/// at the default coalescing gap and then at each longer one on the 1-2-5
/// series until the mirror fits the budget (or the longest tried).
#[derive(Debug, Clone, Copy, Serialize)]
#[non_exhaustive]
pub struct Busy {
    /// The coalescing gap measured at (the one recommended), ms.
    pub coalesce_ms: u64,
    /// The writer's rate, commits a second.
    pub commits_per_s: f64,
    /// The mirror's CPU while measuring (its idle cost included), percent of one core.
    pub percent: f64,
    /// CPU per round (every section refreshing once, each finding a change,
    /// the commit watch and the replies included), ms.
    pub round_ms: f64,
    /// Rounds a second while measuring.
    pub rounds_per_s: f64,
    /// Commits the writer made.
    pub commits: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The database measured.
    pub db: String,
    /// The budget, percent of one core, for the whole mirror.
    pub budget_percent: f64,
    /// The budget's share of each section, after the idle cost, percent of one core.
    pub share_percent: f64,
    /// The running mirror's idle and fixed costs; `None` where they could not
    /// be measured (then the fixed cost is taken as [`ASSUMED_FIXED_MS`]).
    pub runtime: Option<RuntimeCost>,
    /// The shortest period recommended, ms, and why ([`PERIOD_FLOOR_WITH_WAKE`],
    /// [`PERIOD_FLOOR_TIMERS_ONLY`]).
    pub floor_ms: u64,
    /// `ORCH_RECONCILE_MS`: the default (5 minutes, the floor: a person
    /// would not re-derive everything more often without a reason), or the
    /// shortest period on the 1-2-5 series at which reconciling every
    /// section costs at most [`RECONCILE_SHARE`] of the budget, ms.
    pub recommended_reconcile_ms: u64,
    /// What reconciling at that period costs while commits come, percent of one core.
    pub reconcile_percent: f64,
    /// How the mirror would learn of commits to this database (a watch on
    /// its directory, or the timers alone, and why).
    pub wake: WakeMode,
    /// Median time from the start of a commit to the watch's wake-up, ms,
    /// measured on a scratch database in the system's temporary directory
    /// (this tool never writes near the orchestrator's); `None` without a watch.
    pub wake_latency_ms: Option<f64>,
    /// Commit to visible, estimated: the wake-up, then the slowest section's
    /// median refresh that finds a change (the sections refresh in parallel), ms.
    pub commit_to_visible_ms: Option<f64>,
    /// The shortest `ORCH_COALESCE_MS` on the 1-2-5 series at which
    /// sustained commits (every section refreshing once per gap, a round
    /// costing [`Busy::round_ms`]) stay within the budget; never below the default.
    pub recommended_coalesce_ms: u64,
    /// The mirror's CPU at the recommended settings with the database idle
    /// (every section's timer refresh finding nothing), percent of one core.
    pub expected_idle_percent: f64,
    /// The mirror's CPU at the recommended settings under sustained commits:
    /// measured at [`Options::commit_rate`] ([`Busy::percent`]), else
    /// estimated as one round of the sections' costs per gap, percent.
    pub expected_busy_percent: f64,
    /// `ORCH_CPU_BUDGET_PERCENT`: the budget asked for (`--budget`), so that
    /// the mirror keeps to it at any commit rate, the measured one included.
    pub recommended_cpu_budget_percent: f64,
    /// Whether, at the measured commit rate and the recommended gap, the
    /// mirror would spend more than that budget: it then widens the gap
    /// itself (freshness gives, values stay exact).
    pub budget_sets_the_gap: bool,
    /// One entry per section.
    pub sections: Vec<SectionReport>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "database: {}", self.db)?;
        writeln!(f, "budget: {}% of one core for the whole mirror", self.budget_percent)?;
        match &self.runtime {
            Some(r) => writeln!(
                f,
                "the running mirror here: {:.2}% of one core idle, {:.3} ms per refresh of an unchanged database \
                 ({:.3} ms of it fixed: scheduling, the blocking pool, the connection), {} refreshes measured",
                r.idle_percent, r.refresh_ms, r.fixed_ms, r.refreshes
            )?,
            None => writeln!(
                f,
                "the running mirror could not be measured here: a fixed cost of {ASSUMED_FIXED_MS} ms per refresh is assumed"
            )?,
        }
        match self.runtime.and_then(|r| r.busy) {
            Some(b) => writeln!(
                f,
                "under commits (a scratch copy in the temporary directory, {} commits of the orchestrator's pattern \
                 at {} a second): {:.2}% of one core at ORCH_COALESCE_MS={} ({:.3} ms per round of refreshes, \
                 {:.1} rounds a second)",
                b.commits, b.commits_per_s, b.percent, b.coalesce_ms, b.round_ms, b.rounds_per_s
            )?,
            None => writeln!(
                f,
                "under commits: not measured (no scratch copy, its writer failed, or commits do not wake the \
                 sections); a round is taken as the sections' costs added up"
            )?,
        }
        writeln!(f, "each section's share of what is left: {:.2}% of one core", self.share_percent)?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<8} {:>10} {:>8} {:>10} {:>10} {:>13} {:>13} {:>10} {:>11} {:>9} {:>11}",
            "section",
            "rows",
            "samples",
            "median ms",
            "p95 ms",
            "unchanged ms",
            "reconcile ms",
            "cost ms",
            "period ms",
            "cpu %",
            "advised ms"
        )?;
        for s in &self.sections {
            writeln!(
                f,
                "{:<8} {:>10} {:>8} {:>10.3} {:>10.3} {:>13.3} {:>13.1} {:>10.3} {:>11} {:>9.3} {:>11}",
                s.section.as_str(),
                s.rows,
                s.samples,
                s.median_ms,
                s.p95_ms,
                s.unchanged_median_ms,
                s.reconcile_median_ms,
                s.refresh_cost_ms,
                s.current_period_ms,
                s.cpu_percent_at_current,
                s.recommended_period_ms
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "median ms: a refresh that finds a commit (incremental, before the changed rows), the median of {} \
             rounds' medians; cost ms: that plus the fixed cost, what the budget is spent on; cpu %: at the \
             current period if every refresh finds a change; reconcile ms: deriving everything again, at most \
             every ORCH_RECONCILE_MS (never more often than the default 5 minutes; a quarter of the budget at most)",
            self.sections.first().map_or(0, |s| s.round_medians_ms.len())
        )?;
        writeln!(
            f,
            "advised ms: the shortest period on the 1-2-5 series within the section's share, never below {} ms ({})",
            self.floor_ms,
            if self.wake.on_commit() {
                "commits wake the sections, so the timer only refreshes what no commit announces: a process's \
                 liveness and CPU ticks, which nobody reads finer than once a second"
            } else {
                "only the timers find commits here, and a quarter second is below what a person watching notices"
            }
        )?;
        writeln!(f)?;
        writeln!(f, "# paste into .env:")?;
        for s in &self.sections {
            writeln!(f, "{}={}", s.section.refresh_var(), s.recommended_period_ms)?;
        }
        writeln!(f, "ORCH_RECONCILE_MS={}", self.recommended_reconcile_ms)?;
        writeln!(f, "ORCH_COALESCE_MS={}", self.recommended_coalesce_ms)?;
        writeln!(f, "ORCH_CPU_BUDGET_PERCENT={}", self.recommended_cpu_budget_percent)?;
        writeln!(f)?;
        let rate = self.runtime.and_then(|r| r.busy).map_or_else(
            || "under sustained commits (estimated)".to_owned(),
            |b| format!("with {} commits a second, measured", b.commits_per_s),
        );
        writeln!(
            f,
            "expected at these settings: {:.2}% of one core with the database idle, {:.2}% {rate} \
             ({:.2}% of it reconciling; the HTTP server and its readers apart)",
            self.expected_idle_percent, self.expected_busy_percent, self.reconcile_percent
        )?;
        if self.budget_sets_the_gap {
            writeln!(
                f,
                "at this commit rate the gap alone cannot keep the budget (each commit's rows cost more than a \
                 longer gap saves): with ORCH_CPU_BUDGET_PERCENT the mirror widens the gap itself, up to each \
                 section's period, so commits become visible later; raise --budget for fresher values"
            )?;
        }
        match (&self.wake.reason, self.wake_latency_ms, self.commit_to_visible_ms) {
            (None, Some(wake), Some(visible)) => writeln!(
                f,
                "commits wake the sections: a watch's wake-up takes {wake:.2} ms (median, on a scratch database in \
                 the temporary directory), so a commit is visible after about {visible:.1} ms"
            )?,
            (Some(reason), _, _) => {
                writeln!(f, "commits do NOT wake the sections ({reason}); they are seen at each section's period")?
            }
            _ => writeln!(f, "commits wake the sections (the wake-up latency could not be measured here)")?,
        }
        writeln!(
            f,
            "ORCH_COALESCE_MS: under sustained commits every section refreshes at most once per gap; at this gap \
             that costs at most the budget (a commit that comes later than the gap after the previous one is \
             seen at once either way)"
        )?;
        Ok(())
    }
}
