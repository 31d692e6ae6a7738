//! What tune measures against (its options, the floors and shares it
//! advises within) and why it can fail.

use std::time::Duration;

use crate::section::{LoadError, SectionName};

/// The part of the budget reconciliation may take: a quarter. It runs only
/// after refreshes folded in commits, and only catches history edits that
/// the change detectors missed, so most of the budget goes to freshness.
pub const RECONCILE_SHARE: f64 = 0.25;

/// The shortest period `tune` recommends when commits wake the sections.
///
/// A commit is then visible within milliseconds whatever the period; the
/// timer only brings what no commit announces (a process that died, its CPU
/// ticks, which the kernel counts in 10 ms steps and the page shows per
/// second). Refreshing those faster than once a second shows a person
/// nothing new, and costs a fixed share of a core per refresh.
pub const PERIOD_FLOOR_WITH_WAKE: Duration = Duration::from_secs(1);

/// The shortest period `tune` recommends when only the timers find commits
/// (the period is then the delay from commit to visible): a quarter of a
/// second is below what a person watching the page notices, and a sidecar
/// polling every second sees data at most 1.25 s old.
pub const PERIOD_FLOOR_TIMERS_ONLY: Duration = Duration::from_millis(250);

/// How to measure.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Options {
    /// CPU budget for the whole mirror, percent of one core (what remains
    /// after its idle cost is split evenly over the sections).
    pub budget_percent: f64,
    /// Timed refreshes per section in each round, after two warm-up refreshes.
    pub samples: usize,
    /// Rounds: each measures every section in turn; a figure is the median
    /// of its rounds' medians, so one noisy moment moves nothing.
    pub rounds: usize,
    /// Stop sampling a section after this long in each round (at least three
    /// samples are taken).
    pub max_time_per_section: Duration,
    /// How long to run the real section actors for each runtime
    /// measurement (idle, per refresh, under commits at each gap tried).
    pub runtime_window: Duration,
    /// The sustained commit rate the coalescing gap is chosen for, commits a second.
    pub commit_rate: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            budget_percent: 2.0,
            samples: 20,
            rounds: 3,
            max_time_per_section: Duration::from_secs(7),
            runtime_window: Duration::from_secs(2),
            commit_rate: 20.0,
        }
    }
}

/// The fixed cost per refresh assumed when the runtime cannot be measured
/// (measured 0.17-0.3 ms on a 2-core machine; BENCHMARKS.md, "Choosing periods").
pub const ASSUMED_FIXED_MS: f64 = 0.3;

/// Why tuning failed.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// A refresh failed.
    #[error("{section}: {source}")]
    Refresh {
        /// Which section.
        section: SectionName,
        /// The error.
        source: LoadError,
    },
    /// The scratch copy that commits are measured on could not be made, so
    /// no setting for commits can be advised.
    #[error(
        "cannot make the scratch copy that commits are measured on, in {dir}: {reason}; no setting is advised \
         without that measurement. Point TMPDIR at a writable directory with room for a copy of the database"
    )]
    Scratch {
        /// The temporary directory.
        dir: String,
        /// What failed.
        reason: String,
    },
}
