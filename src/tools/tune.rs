//! `orchmirror tune`: measures each section's refresh on a real database and
//! says which refresh period a CPU budget affords. Read-only, like the mirror.
//!
//! One idea per file: `options` (what to measure, and errors), `measure` (each section's refresh, the mirror's own
//! cost beside a writer), `report` (what was found and how it is printed),
//! `scratch` (copies removed on every exit), `stats`; this file advises.

mod measure;
mod options;
mod report;
mod scratch;
mod stats;

pub use measure::WAIT_FOR_READABLE;
pub use options::{
    ASSUMED_FIXED_MS, Options, PERIOD_FLOOR_TIMERS_ONLY, PERIOD_FLOOR_WITH_WAKE, RECONCILE_SHARE, TuneError,
};
pub use report::{Busy, Report, RuntimeCost, SectionReport};
pub use scratch::remove_scratch;
pub use stats::one_two_five;

use measure::*;
use stats::*;

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use crate::config::Settings;
use crate::config::table::{COALESCE, RECONCILE};
use crate::section::{self};
use crate::source::commits::CommitWatch;

/// Measures every built-in section of the database at `path`.
pub fn run(settings: &Settings, path: &Path, opts: &Options) -> Result<Report, TuneError> {
    let tolerance = settings.pid_start_tolerance;
    let progress = std::io::stderr().is_terminal();
    wait_until_readable(path, progress);
    let mut m = Measure { path, opts, progress, rounds: Vec::new(), failed: None };
    for _ in 0..opts.rounds.max(1) {
        section::built_in(tolerance, None, &mut m);
    }
    if let Some(e) = m.failed {
        return Err(e);
    }
    let runtime = runtime_cost(settings, path, opts.runtime_window, progress);
    let wake = CommitWatch::start(path, || {}).mode();
    let floor = if wake.on_commit() { PERIOD_FLOOR_WITH_WAKE } else { PERIOD_FLOOR_TIMERS_ONLY };
    let count = m.rounds.len().max(1) as f64;
    let unchanged_all: Vec<f64> = m.rounds.iter().map(|(_, r)| across_rounds(r, |r| &r.unchanged).0).collect();
    // Reconciliation: every section derived again, at most every
    // ORCH_RECONCILE_MS, and only while commits come.
    let reconcile_s: f64 = m.rounds.iter().map(|(_, r)| across_rounds(r, |r| &r.rebuilds).0 / 1000.0).sum();
    let reconcile_ms = one_two_five(reconcile_s / (opts.budget_percent / 100.0 * RECONCILE_SHARE) * 1000.0)
        .max(RECONCILE.default.as_millis() as u64)
        .min(RECONCILE.kind.1);
    let reconcile_share = reconcile_s / (reconcile_ms as f64 / 1000.0);
    let idle_share = runtime.as_ref().map_or(0.0, |m| m.idle_percent / 100.0);
    // What the refreshes may spend: the budget less the idle cost, and under
    // commits less the reconciliations too.
    let left = (opts.budget_percent / 100.0 - idle_share - reconcile_share).max(0.0);
    let busy_budget = opts.budget_percent - 100.0 * reconcile_share;
    // Under commits: the default gap first, then each longer one on the
    // 1-2-5 series, until the mirror fits the budget.
    let mut busy = None;
    if runtime.is_some() && wake.on_commit() {
        if progress {
            eprint!("\r  measuring the running mirror: {:<24}", "commits (scratch copy)");
        }
        let (_dir, copy) = scratch_copy(path)?;
        {
            let mut gap = COALESCE.default.as_millis() as u64;
            for _ in 0..6 {
                let Some(b) =
                    busy_at(settings, &copy, Duration::from_millis(gap), opts.commit_rate, opts.runtime_window)
                else {
                    break;
                };
                busy = Some(b);
                if b.percent <= busy_budget || gap >= 1000 {
                    break;
                }
                gap = one_two_five(gap as f64 + 1.0);
            }
        }
    }
    if progress {
        eprint!("\r{:60}\r", "");
    }
    let runtime = runtime.map(|m| RuntimeCost {
        idle_percent: m.idle_percent,
        refresh_ms: m.refresh_ms,
        fixed_ms: (m.refresh_ms - unchanged_all.iter().sum::<f64>() / count).max(0.0),
        refreshes: m.refreshes,
        busy,
    });
    let fixed = runtime.map_or(ASSUMED_FIXED_MS, |r| r.fixed_ms);
    let share = left / count;
    let mut sections = Vec::new();
    for (name, rounds) in &m.rounds {
        let (median, round_medians) = across_rounds(rounds, |r| &r.changed);
        let (unchanged, _) = across_rounds(rounds, |r| &r.unchanged);
        let (reconcile, _) = across_rounds(rounds, |r| &r.rebuilds);
        let mut all: Vec<Duration> = rounds.iter().flat_map(|r| r.changed.iter().copied()).collect();
        all.sort();
        let cost = median + fixed;
        let wanted = if share > 0.0 { cost / 1000.0 / share * 1000.0 } else { f64::INFINITY };
        let period = settings.refresh.get(*name);
        sections.push(SectionReport {
            section: *name,
            rows: rounds.first().map_or(0, |r| r.rows),
            samples: all.len(),
            median_ms: median,
            round_medians_ms: round_medians,
            p95_ms: ms(percentile(&all, 0.95)),
            unchanged_median_ms: unchanged,
            reconcile_median_ms: reconcile,
            refresh_cost_ms: cost,
            current_period_ms: period.as_millis() as u64,
            cpu_percent_at_current: 100.0 * cost / 1000.0 / period.as_secs_f64().max(1e-9),
            recommended_period_ms: one_two_five(wanted.max(ms(floor))),
        });
    }
    let wake_latency_ms = if wake.on_commit() { scratch_wake_latency() } else { None };
    let slowest = sections.iter().map(|s| s.median_ms).fold(0.0, f64::max);
    // Under commits: the gap measured to fit, else the sections' costs added
    // up as one round per gap.
    let model_round: f64 = sections.iter().map(|s| s.refresh_cost_ms).sum();
    let coalesce = match busy {
        Some(b) => b.coalesce_ms,
        None => {
            let wanted = if left > 0.0 { model_round / left } else { f64::INFINITY };
            one_two_five(wanted.max(COALESCE.default.as_millis() as f64)).min(COALESCE.kind.1)
        }
    };
    let idle_cost: f64 =
        sections.iter().zip(&unchanged_all).map(|(s, u)| (fixed + u) / s.recommended_period_ms as f64).sum();
    // Under sustained commits the woken refreshes push the timers back:
    // every section refreshes once per coalescing gap. Without a watch, the
    // timers alone, each refresh finding a change.
    // Reconciliations run only while commits come, so they count there.
    let busy_percent = 100.0 * reconcile_share
        + match (busy, wake.on_commit()) {
            (Some(b), _) => b.percent,
            (None, true) => 100.0 * (idle_share + model_round / coalesce.max(1) as f64),
            (None, false) => {
                100.0
                    * (idle_share
                        + sections.iter().map(|s| s.refresh_cost_ms / s.recommended_period_ms as f64).sum::<f64>())
            }
        };
    Ok(Report {
        db: path.display().to_string(),
        budget_percent: opts.budget_percent,
        share_percent: share * 100.0,
        runtime,
        floor_ms: floor.as_millis() as u64,
        recommended_reconcile_ms: reconcile_ms,
        reconcile_percent: 100.0 * reconcile_share,
        commit_to_visible_ms: wake_latency_ms.map(|w| w + slowest),
        wake,
        wake_latency_ms,
        recommended_coalesce_ms: coalesce,
        expected_idle_percent: 100.0 * (idle_share + idle_cost),
        expected_busy_percent: busy_percent,
        recommended_cpu_budget_percent: opts.budget_percent.clamp(0.1, 100.0),
        budget_sets_the_gap: busy_percent > opts.budget_percent,
        sections,
    })
}
