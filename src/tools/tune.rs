//! `orchmirror tune`: measures each section's refresh on a real database and
//! says which refresh period a CPU budget affords. Read-only, like the mirror.

use std::hint::black_box;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Settings;
use crate::config::table::{COALESCE, RECONCILE};
use crate::section::{self, LoadError, Section, SectionName, SectionVisitor};
use crate::source::commits::{CommitWatch, WakeMode};
use crate::source::db::Database;

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

/// How long tune waits for a database it cannot read yet (its writer holds
/// it exclusively, or closed and took its WAL files away) before it fails.
pub const WAIT_FOR_READABLE: Duration = Duration::from_secs(15);

/// The scratch directories tune has made and not yet removed, so that a
/// signal can remove them before the process exits ([`remove_scratch`]).
static SCRATCH: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A scratch directory: removed when dropped, or by [`remove_scratch`].
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("orchmirror-tune-").tempdir()?;
        SCRATCH.lock().unwrap_or_else(|p| p.into_inner()).push(dir.path().to_path_buf());
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        SCRATCH.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| p != self.0.path());
    }
}

/// Removes every scratch directory tune has made: for a signal handler that
/// then exits (the directories' own clean-up runs only on a normal return).
pub fn remove_scratch() {
    for dir in SCRATCH.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The smallest value of the 1-2-5 series (…, 200, 500, 1000, 2000, …) at
/// least `ms`: round numbers a person would write, and a recommendation
/// that does not move when a measurement moves by a few percent.
pub fn one_two_five(ms: f64) -> u64 {
    let mut decade = 1u64;
    loop {
        for step in [1, 2, 5] {
            let v = step * decade;
            if v as f64 >= ms || v >= 3_600_000 {
                return v.min(3_600_000);
            }
        }
        decade *= 10;
    }
}

/// One round's figures for one section.
struct Round {
    rows: i64,
    changed: Vec<Duration>,
    unchanged: Vec<Duration>,
    rebuilds: Vec<Duration>,
}

/// Measures `section` on `path` once.
fn measure<S: Section>(section: &S, path: &Path, opts: &Options, progress: bool) -> Result<Round, TuneError> {
    let fail = |source| TuneError::Refresh { section: S::NAME, source };
    let db = Database::new(path);
    let deadline = Duration::from_secs(600);
    let rows = match S::ROWS_SQL {
        Some(sql) => db.with_conn(deadline, |c, _| Ok(c.query_row(sql, [], |r| r.get(0))?)).map_err(fail)?,
        None => 0,
    };
    let budget = opts.max_time_per_section;
    // Reconciliations: everything derived again (the state dropped first).
    let mut rebuilds = Vec::new();
    let started = Instant::now();
    while rebuilds.len() < 3 || (rebuilds.len() < opts.samples && started.elapsed() < budget / 2) {
        let t = Instant::now();
        section.forget();
        db.with_conn(deadline, |c, _| section.refresh(c)).map_err(fail)?;
        rebuilds.push(t.elapsed());
        if progress {
            eprint!("\r  measuring {:<7} reconcile {:>3}   ", S::NAME.as_str(), rebuilds.len());
        }
    }
    // Incremental refreshes on the state just built: the cost of a refresh
    // that finds a commit, before the rows that changed (a few, usually).
    let mut changed = Vec::new();
    let mut last = None;
    let started = Instant::now();
    for i in 0..opts.samples + 2 {
        let t = Instant::now();
        last = Some(db.with_conn(deadline, |c, _| section.refresh(c)).map_err(fail)?);
        if i >= 2 {
            changed.push(t.elapsed());
        }
        if progress {
            eprint!("\r  measuring {:<7} {:>3}/{}      ", S::NAME.as_str(), changed.len(), opts.samples);
        }
        if changed.len() >= 3 && started.elapsed() > budget / 2 {
            break;
        }
    }
    // A refresh that finds nothing committed: the check that nothing was
    // (no connection is opened), and what moves without a commit (the
    // agents' CPU ticks from /proc).
    let seen = db.with_conn(deadline, |_, fingerprint| Ok(fingerprint)).map_err(fail)?;
    let mut unchanged = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        black_box(db.unchanged_since(&seen));
        if let Some(data) = &last {
            drop(section.resample(data));
        }
        unchanged.push(t.elapsed());
    }
    Ok(Round { rows, changed, unchanged, rebuilds })
}

/// Measures each visited section in turn, adding a round to each one's list.
struct Measure<'a> {
    path: &'a Path,
    opts: &'a Options,
    progress: bool,
    rounds: Vec<(SectionName, Vec<Round>)>,
    failed: Option<TuneError>,
}

impl SectionVisitor for Measure<'_> {
    fn visit<S: Section>(&mut self, section: S) {
        if self.failed.is_some() {
            return;
        }
        match measure(&section, self.path, self.opts, self.progress) {
            Ok(round) => match self.rounds.iter_mut().find(|(n, _)| *n == S::NAME) {
                Some((_, rounds)) => rounds.push(round),
                None => self.rounds.push((S::NAME, vec![round])),
            },
            Err(e) => self.failed = Some(e),
        }
    }
}

/// The median of each round's median of `pick`, and each round's median.
fn across_rounds(rounds: &[Round], pick: impl Fn(&Round) -> &Vec<Duration>) -> (f64, Vec<f64>) {
    let per_round: Vec<f64> = rounds
        .iter()
        .map(|r| {
            let mut v = pick(r).clone();
            v.sort();
            ms(percentile(&v, 0.5))
        })
        .collect();
    (median_f64(&per_round), per_round)
}

/// CPU time of the process (every thread) or of the calling thread, where the OS tells it.
fn cpu_time(thread: bool) -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        use nix::time::ClockId;
        let clock = if thread { ClockId::CLOCK_THREAD_CPUTIME_ID } else { ClockId::CLOCK_PROCESS_CPUTIME_ID };
        Some(Duration::from(nix::time::clock_gettime(clock).ok()?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = thread;
        None
    }
}

/// What the running mirror spent in one measured window.
struct Spent {
    /// The process's CPU, the writer's own excluded.
    cpu: Duration,
    wall: Duration,
    /// Refreshes of every section (loaded and skipped).
    refreshes: u64,
    /// Refreshes that found a change and ran the queries.
    loaded: u64,
    /// Commits the writer made.
    commits: u64,
}

/// Runs the real section actors (read-only, no server) on `path` in this
/// process with every section at `period` and commits coalesced at
/// `coalesce`; past every section's first load, measures `window`, while a
/// writer commits the orchestrator's pattern `rate` times a second when
/// given one (only ever on a scratch copy). `None` when it cannot be measured.
fn run_mirror(
    settings: &Settings,
    path: &Path,
    period: Duration,
    coalesce: Duration,
    window: Duration,
    rate: Option<f64>,
) -> Option<Spent> {
    use crate::MirrorHandle;
    use crate::config::RefreshPeriods;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut s = settings.clone();
    s.db_path = Some(path.to_path_buf());
    s.metrics_enabled = true;
    s.refresh = RefreshPeriods::uniform(period);
    s.coalesce = coalesce;
    s.reconcile = Duration::from_secs(86_400);
    actix_web::rt::System::new().block_on(async move {
        let handle = MirrorHandle::start(&s).ok()?;
        let counts = |h: &MirrorHandle| {
            h.refresh_counters().iter().fold((0, 0), |(n, l), (_, c)| (n + c.loaded + c.skipped, l + c.loaded))
        };
        // Past every section's first load (a full read of a big table).
        let until = Instant::now() + Duration::from_secs(600);
        while handle.refresh_counters().iter().any(|(_, c)| c.loaded == 0) {
            if Instant::now() > until {
                return None;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = match rate {
            Some(rate) => {
                let (stop, path) = (Arc::clone(&stop), path.to_path_buf());
                Some(std::thread::spawn(move || pattern_writer(&path, rate, &stop)))
            }
            None => None,
        };
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        let (cpu0, t0, (n0, l0)) = (cpu_time(false)?, Instant::now(), counts(&handle));
        actix_web::rt::time::sleep(window).await;
        let (cpu1, t1, (n1, l1)) = (cpu_time(false)?, Instant::now(), counts(&handle));
        stop.store(true, Ordering::Relaxed);
        handle.stop();
        let (writer_cpu, commits) = match writer {
            // The writer's CPU over its whole life: an upper bound of its share of the window.
            Some(w) => w.join().ok()?.ok()?,
            None => (Duration::ZERO, 0),
        };
        Some(Spent {
            cpu: cpu1.saturating_sub(cpu0).saturating_sub(writer_cpu),
            wall: t1 - t0,
            refreshes: n1.saturating_sub(n0),
            loaded: l1.saturating_sub(l0),
            commits,
        })
    })
}

/// Commits the orchestrator's pattern ([`crate::tools::pattern`]: statement
/// groups touching rows anywhere in history) to the scratch copy at `path`,
/// `rate` times a second, until `stop`. Returns the writer's own CPU time and
/// its commits.
fn pattern_writer(path: &Path, rate: f64, stop: &std::sync::atomic::AtomicBool) -> rusqlite::Result<(Duration, u64)> {
    let cpu0 = cpu_time(true).unwrap_or_default();
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(1))?;
    let mut writer = crate::tools::pattern::PatternWriter::new(conn, 7);
    let gap = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut next = Instant::now();
    let mut commits = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        writer.commit()?;
        commits += 1;
        next += gap;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok((cpu_time(true).unwrap_or_default().saturating_sub(cpu0), commits))
}

/// A copy of the database in the system's temporary directory (the
/// orchestrator's is only read: one read transaction, SQLite's backup of
/// every page in one step), in WAL mode like the orchestrator's.
fn scratch_copy(path: &Path) -> Result<(Scratch, std::path::PathBuf), TuneError> {
    let failed = |reason: String| TuneError::Scratch { dir: std::env::temp_dir().display().to_string(), reason };
    let dir = Scratch::new().map_err(|e| failed(e.to_string()))?;
    let copy = dir.path().join("copy.sqlite");
    let db = Database::new(path);
    db.with_conn(Duration::from_secs(600), |conn, _| {
        let mut dst = rusqlite::Connection::open(&copy)?;
        rusqlite::backup::Backup::new(conn, &mut dst)?.step(-1)?;
        Ok(())
    })
    .map_err(|e| failed(e.to_string()))?;
    let conn = rusqlite::Connection::open(&copy).map_err(|e| failed(e.to_string()))?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| failed(e.to_string()))?;
    Ok((dir, copy))
}

/// The running mirror's costs: idle (periods of an hour), per refresh of an
/// unchanged database (every section every 20 ms).
fn runtime_cost(settings: &Settings, path: &Path, window: Duration, progress: bool) -> Option<Measured> {
    let say = |what: &str| {
        if progress {
            eprint!("\r  measuring the running mirror: {what:<24}");
        }
    };
    let hour = Duration::from_secs(3600);
    say("idle");
    let idle = run_mirror(settings, path, hour, COALESCE.default, window, None)?;
    say("refreshes");
    let quiet = run_mirror(settings, path, Duration::from_millis(20), COALESCE.default, window, None)?;
    let idle_share = idle.cpu.as_secs_f64() / idle.wall.as_secs_f64().max(1e-9);
    let per = |spent: &Spent, count: u64| {
        let cpu = spent.cpu.as_secs_f64() - idle_share * spent.wall.as_secs_f64();
        (count > 0).then(|| 1000.0 * cpu.max(0.0) / count as f64)
    };
    let refresh_ms = per(&quiet, quiet.refreshes)?;
    Some(Measured { idle_percent: 100.0 * idle_share, refresh_ms, refreshes: quiet.refreshes })
}

/// The mirror's CPU on the scratch copy `copy` with commits coalesced at
/// `coalesce` while a writer commits the orchestrator's pattern `rate`
/// times a second.
fn busy_at(settings: &Settings, copy: &Path, coalesce: Duration, rate: f64, window: Duration) -> Option<Busy> {
    let spent = run_mirror(settings, copy, Duration::from_secs(3600), coalesce, window, Some(rate))?;
    let wall = spent.wall.as_secs_f64().max(1e-9);
    let rounds = spent.loaded as f64 / settings_sections(settings) as f64;
    Some(Busy {
        coalesce_ms: coalesce.as_millis() as u64,
        commits_per_s: rate,
        percent: 100.0 * spent.cpu.as_secs_f64() / wall,
        round_ms: if rounds > 0.0 { 1000.0 * spent.cpu.as_secs_f64() / rounds } else { 0.0 },
        rounds_per_s: rounds / wall,
        commits: spent.commits,
    })
}

/// How many sections the mirror runs.
fn settings_sections(settings: &Settings) -> usize {
    let mut count = Count(0);
    section::built_in(settings.pid_start_tolerance, None, &mut count);
    count.0.max(1)
}

/// Counts visited sections.
struct Count(usize);

impl SectionVisitor for Count {
    fn visit<S: Section>(&mut self, _: S) {
        self.0 += 1;
    }
}

/// [`runtime_cost`]'s figures.
struct Measured {
    idle_percent: f64,
    refresh_ms: f64,
    refreshes: u64,
}

/// Waits up to [`WAIT_FOR_READABLE`] while the database cannot be read for a
/// passing reason (a writer holds it exclusively, is closing, or has just
/// closed and removed the WAL files this process may not make); any other
/// failure, or one that lasts, is left for the measurements to report.
fn wait_until_readable(path: &Path, progress: bool) {
    let db = Database::new(path);
    let started = Instant::now();
    loop {
        let passing = match db.with_conn(Duration::from_secs(10), |_, _| Ok(())) {
            Ok(()) => return,
            Err(e) => {
                let text = e.to_string();
                ["locked", "busy", "held exclusively", "waits until the writer"].iter().any(|w| text.contains(w))
            }
        };
        if !passing || started.elapsed() >= WAIT_FOR_READABLE {
            return;
        }
        if progress {
            eprint!("\r  waiting for the database to be readable (its writer holds it or just closed it)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

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

/// Median time from the start of a commit to a watch's wake-up, on a scratch
/// WAL database in the temporary directory (20 commits); `None` when that
/// cannot be set up.
fn scratch_wake_latency() -> Option<f64> {
    let dir = Scratch::new().ok()?;
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
