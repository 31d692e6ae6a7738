//! `orchmirror tune`: measures each section's refresh on a real database and
//! says which refresh period a CPU budget affords. Read-only, like the mirror.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Settings;
use crate::config::table::COALESCE;
use crate::section::{self, LoadError, Section, SectionName, SectionVisitor};
use crate::source::commits::{CommitWatch, WakeMode};
use crate::source::db::Database;

/// The share of one core reconciliation may take (README, "Freshness and exactness" asks 1 % at 1M jobs).
pub const RECONCILE_BUDGET_PERCENT: f64 = 1.0;

/// How to measure.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Options {
    /// CPU budget for the whole mirror, percent of one core (split evenly over the sections).
    pub budget_percent: f64,
    /// Timed refreshes per section, after two warm-up refreshes.
    pub samples: usize,
    /// Stop sampling a section after this long (at least three samples are taken).
    pub max_time_per_section: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { budget_percent: 2.0, samples: 20, max_time_per_section: Duration::from_secs(20) }
    }
}

/// One section's measurements and recommendation.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SectionReport {
    /// The section.
    pub section: SectionName,
    /// Rows the section's queries read (the table they scan).
    pub rows: i64,
    /// Timed refreshes.
    pub samples: usize,
    /// Median refresh time when the data changed (the incremental path,
    /// before the changed rows themselves), ms.
    pub median_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// Median refresh time when nothing changed (change detection only), ms.
    pub unchanged_median_ms: f64,
    /// Median time to derive everything again (a reconciliation), ms.
    pub reconcile_median_ms: f64,
    /// The configured period, ms.
    pub current_period_ms: u64,
    /// CPU share of one core at the configured period if every refresh finds a change, percent.
    pub cpu_percent_at_current: f64,
    /// The shortest period within this section's share of the budget, ms.
    pub recommended_period_ms: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The database measured.
    pub db: String,
    /// The budget, percent of one core, for all four sections together.
    pub budget_percent: f64,
    /// The budget's share of each section, percent of one core.
    pub share_percent: f64,
    /// The shortest `ORCH_RECONCILE_MS` at which reconciling every section
    /// costs at most [`RECONCILE_BUDGET_PERCENT`] of one core, ms.
    pub recommended_reconcile_ms: u64,
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
    /// The shortest `ORCH_COALESCE_MS` at which sustained commits (every
    /// section refreshing once per gap, each refresh finding a change) stay
    /// within the budget; never below the default.
    pub recommended_coalesce_ms: u64,
    /// One entry per section.
    pub sections: Vec<SectionReport>,
}

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
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Measures `section` on `path`.
fn measure<S: Section>(
    section: &S,
    path: &Path,
    opts: &Options,
    period: Duration,
    share: f64,
    progress: bool,
) -> Result<SectionReport, TuneError> {
    let fail = |source| TuneError::Refresh { section: S::NAME, source };
    let db = Database::new(path);
    let deadline = Duration::from_secs(600);
    let rows = match S::ROWS_SQL {
        Some(sql) => db.with_conn(deadline, |c, _| Ok(c.query_row(sql, [], |r| r.get(0))?)).map_err(fail)?,
        None => 0,
    };
    // Reconciliations: everything derived again (the state dropped first).
    let mut rebuilds = Vec::new();
    let started = Instant::now();
    while rebuilds.len() < 3 || (rebuilds.len() < opts.samples && started.elapsed() < opts.max_time_per_section / 2) {
        let t = Instant::now();
        section.forget();
        db.with_conn(deadline, |c, _| section.refresh(c)).map_err(fail)?;
        rebuilds.push(t.elapsed());
        if progress {
            eprint!("\r  measuring {:<7} reconcile {:>3}", S::NAME.as_str(), rebuilds.len());
        }
    }
    // Incremental refreshes on the state just built: the cost of a refresh
    // that finds a commit, before the rows that changed (a few, usually).
    let mut times = Vec::new();
    let started = Instant::now();
    for i in 0..opts.samples + 2 {
        let t = Instant::now();
        db.with_conn(deadline, |c, _| section.refresh(c)).map_err(fail)?;
        if i >= 2 {
            times.push(t.elapsed());
        }
        if progress {
            eprint!("\r  measuring {:<7} {:>3}/{}   ", S::NAME.as_str(), times.len(), opts.samples);
        }
        if times.len() >= 3 && started.elapsed() > opts.max_time_per_section {
            break;
        }
    }
    rebuilds.sort();
    let mut unchanged = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        db.with_conn(deadline, |_, fingerprint| Ok(fingerprint)).map_err(fail)?;
        unchanged.push(t.elapsed());
    }
    times.sort();
    unchanged.sort();
    let median = percentile(&times, 0.5);
    let recommended = if share > 0.0 { median.as_secs_f64() / share } else { f64::INFINITY };
    let recommended_ms = ((recommended * 1000.0 / 10.0).ceil() * 10.0).clamp(10.0, 3_600_000.0) as u64;
    Ok(SectionReport {
        section: S::NAME,
        rows,
        samples: times.len(),
        median_ms: ms(median),
        p95_ms: ms(percentile(&times, 0.95)),
        unchanged_median_ms: ms(percentile(&unchanged, 0.5)),
        reconcile_median_ms: ms(percentile(&rebuilds, 0.5)),
        current_period_ms: period.as_millis() as u64,
        cpu_percent_at_current: 100.0 * median.as_secs_f64() / period.as_secs_f64().max(1e-9),
        recommended_period_ms: recommended_ms,
    })
}

/// Measures each visited section in turn.
struct Measure<'a> {
    settings: &'a Settings,
    path: &'a Path,
    opts: &'a Options,
    share: f64,
    progress: bool,
    reports: Vec<Result<SectionReport, TuneError>>,
}

impl SectionVisitor for Measure<'_> {
    fn visit<S: Section>(&mut self, section: S) {
        let period = self.settings.refresh.get(S::NAME);
        self.reports.push(measure(&section, self.path, self.opts, period, self.share, self.progress));
    }
}

/// Counts visited sections.
struct Count(usize);

impl SectionVisitor for Count {
    fn visit<S: Section>(&mut self, _: S) {
        self.0 += 1;
    }
}

/// Measures every built-in section of the database at `path`.
pub fn run(settings: &Settings, path: &Path, opts: &Options) -> Result<Report, TuneError> {
    let tolerance = settings.pid_start_tolerance;
    let mut count = Count(0);
    section::built_in(tolerance, None, &mut count);
    let share = opts.budget_percent / 100.0 / count.0.max(1) as f64;
    let progress = std::io::stderr().is_terminal();
    let mut m = Measure { settings, path, opts, share, progress, reports: Vec::new() };
    section::built_in(tolerance, None, &mut m);
    if progress {
        eprint!("\r{:60}\r", "");
    }
    let sections = m.reports.into_iter().collect::<Result<Vec<_>, _>>()?;
    let reconcile_s: f64 = sections.iter().map(|s| s.reconcile_median_ms / 1000.0).sum();
    let reconcile_ms = (reconcile_s / (RECONCILE_BUDGET_PERCENT / 100.0) * 1000.0 / 1000.0).ceil() * 1000.0;
    let wake = CommitWatch::start(path, || {}).mode();
    let wake_latency_ms = if wake.on_commit() { scratch_wake_latency() } else { None };
    let slowest = sections.iter().map(|s| s.median_ms).fold(0.0, f64::max);
    let all_ms: f64 = sections.iter().map(|s| s.median_ms).sum();
    let coalesce_ms = if opts.budget_percent > 0.0 { all_ms / (opts.budget_percent / 100.0) } else { f64::INFINITY };
    Ok(Report {
        db: path.display().to_string(),
        budget_percent: opts.budget_percent,
        share_percent: share * 100.0,
        recommended_reconcile_ms: reconcile_ms.clamp(1000.0, 86_400_000.0) as u64,
        commit_to_visible_ms: wake_latency_ms.map(|w| w + slowest),
        wake,
        wake_latency_ms,
        recommended_coalesce_ms: ((coalesce_ms / 10.0).ceil() * 10.0)
            .clamp(COALESCE.default.as_millis() as f64, COALESCE.kind.1 as f64) as u64,
        sections,
    })
}

/// Median time from the start of a commit to a watch's wake-up, on a scratch
/// WAL database in the temporary directory (20 commits); `None` when that
/// cannot be set up.
fn scratch_wake_latency() -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("wake.sqlite");
    let writer = rusqlite::Connection::open(&path).ok()?;
    writer.pragma_update(None, "journal_mode", "WAL").ok()?;
    writer.execute_batch("CREATE TABLE t(x);").ok()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let watch = CommitWatch::start(&path, move || {
        let _ = tx.send(Instant::now());
    });
    if !watch.mode().on_commit() {
        return None;
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20));
        while rx.try_recv().is_ok() {}
        let start = Instant::now();
        writer.execute_batch("INSERT INTO t VALUES (1);").ok()?;
        let woke = rx.recv_timeout(Duration::from_secs(1)).ok()?;
        times.push(woke.saturating_duration_since(start));
    }
    times.sort();
    Some(ms(percentile(&times, 0.5)))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "database: {}", self.db)?;
        writeln!(
            f,
            "budget: {}% of one core for the mirror's refreshes ({:.2}% per section), assuming every refresh finds a change",
            self.budget_percent, self.share_percent
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<8} {:>10} {:>8} {:>10} {:>10} {:>13} {:>13} {:>11} {:>11} {:>13}",
            "section",
            "rows",
            "samples",
            "median ms",
            "p95 ms",
            "unchanged ms",
            "reconcile ms",
            "period ms",
            "cpu %",
            "shortest ms"
        )?;
        for s in &self.sections {
            writeln!(
                f,
                "{:<8} {:>10} {:>8} {:>10.3} {:>10.3} {:>13.3} {:>13.1} {:>11} {:>11.3} {:>13}",
                s.section.as_str(),
                s.rows,
                s.samples,
                s.median_ms,
                s.p95_ms,
                s.unchanged_median_ms,
                s.reconcile_median_ms,
                s.current_period_ms,
                s.cpu_percent_at_current,
                s.recommended_period_ms
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "median ms: a refresh that finds a commit (incremental, before the changed rows); reconcile ms: deriving \
             everything again, at most every ORCH_RECONCILE_MS, budgeted at {RECONCILE_BUDGET_PERCENT}% of one core"
        )?;
        writeln!(f)?;
        writeln!(f, "# paste into .env:")?;
        for s in &self.sections {
            writeln!(f, "{}={}", s.section.refresh_var(), s.recommended_period_ms)?;
        }
        writeln!(f, "ORCH_RECONCILE_MS={}", self.recommended_reconcile_ms)?;
        writeln!(f, "ORCH_COALESCE_MS={}", self.recommended_coalesce_ms)?;
        writeln!(f)?;
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
