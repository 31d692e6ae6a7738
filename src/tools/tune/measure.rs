//! Measuring: each section's refresh on a scratch copy, the running
//! mirror's own cost beside a writer, and the commit watch's latency.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{options::*, report::*, scratch::*, stats::*};
use crate::config::Settings;
use crate::config::table::COALESCE;
use crate::section::{self, Section, SectionName, SectionVisitor};
use crate::source::commits::CommitWatch;
use crate::source::db::Database;

/// How long tune waits for a database it cannot read yet (its writer holds
/// it exclusively, or closed and took its WAL files away) before it fails.
pub const WAIT_FOR_READABLE: Duration = Duration::from_secs(15);

/// One round's figures for one section.
pub(super) struct Round {
    pub(super) rows: i64,
    pub(super) changed: Vec<Duration>,
    pub(super) unchanged: Vec<Duration>,
    pub(super) rebuilds: Vec<Duration>,
}

/// Measures `section` on `path` once.
pub(super) fn measure<S: Section>(
    section: &S,
    path: &Path,
    opts: &Options,
    progress: bool,
) -> Result<Round, TuneError> {
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
pub(super) struct Measure<'a> {
    pub(super) path: &'a Path,
    pub(super) opts: &'a Options,
    pub(super) progress: bool,
    pub(super) rounds: Vec<(SectionName, Vec<Round>)>,
    pub(super) failed: Option<TuneError>,
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
pub(super) fn across_rounds(rounds: &[Round], pick: impl Fn(&Round) -> &Vec<Duration>) -> (f64, Vec<f64>) {
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
pub(super) fn cpu_time(thread: bool) -> Option<Duration> {
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
pub(super) struct Spent {
    /// The process's CPU, the writer's own excluded.
    cpu: Duration,
    wall: Duration,
    /// Refreshes of every section (loaded and skipped).
    pub(super) refreshes: u64,
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
pub(super) fn run_mirror(
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
pub(super) fn pattern_writer(
    path: &Path,
    rate: f64,
    stop: &std::sync::atomic::AtomicBool,
) -> rusqlite::Result<(Duration, u64)> {
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
pub(super) fn scratch_copy(path: &Path) -> Result<(Scratch, std::path::PathBuf), TuneError> {
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
pub(super) fn runtime_cost(settings: &Settings, path: &Path, window: Duration, progress: bool) -> Option<Measured> {
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
pub(super) fn busy_at(
    settings: &Settings,
    copy: &Path,
    coalesce: Duration,
    rate: f64,
    window: Duration,
) -> Option<Busy> {
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
pub(super) fn settings_sections(settings: &Settings) -> usize {
    let mut count = Count(0);
    section::built_in(settings.pid_start_tolerance, None, &mut count);
    count.0.max(1)
}

/// Counts visited sections.
pub(super) struct Count(usize);

impl SectionVisitor for Count {
    fn visit<S: Section>(&mut self, _: S) {
        self.0 += 1;
    }
}

/// [`runtime_cost`]'s figures.
pub(super) struct Measured {
    pub(super) idle_percent: f64,
    pub(super) refresh_ms: f64,
    pub(super) refreshes: u64,
}

/// Waits up to [`WAIT_FOR_READABLE`] while the database cannot be read for a
/// passing reason (a writer holds it exclusively, is closing, or has just
/// closed and removed the WAL files this process may not make); any other
/// failure, or one that lasts, is left for the measurements to report.
pub(super) fn wait_until_readable(path: &Path, progress: bool) {
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

/// Median time from the start of a commit to a watch's wake-up, on a scratch
/// WAL database in the temporary directory (20 commits); `None` when that
/// cannot be set up.
pub(super) fn scratch_wake_latency() -> Option<f64> {
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
