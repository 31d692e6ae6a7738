//! Starting a mirror: the built-in and host sections registered, their
//! names and periods checked, an owner started for each, the commit watch,
//! the watchdog and the worker probe.

use crate::runtime::budget::Budget;
use crate::source::round::Rounds;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::prelude::*;

use super::handle::{Inner, MirrorHandle};
use super::supervision::{Owner, OwnerControl, Owners, WATCHDOG_INTERVAL, WakeTarget};
use crate::config::Settings;
use crate::runtime::rendered::RenderCache;
use crate::runtime::stats::{DurationFamily, duration_family};
use crate::runtime::timing::ActorSettings;
use crate::section::{self, Section, SectionName, SectionVisitor};
use crate::source::commits::CommitWatch;
use crate::source::probe::{self, DEFAULT_PROBE_TIMEOUT, WorkerLive, WorkerProbe};

/// Why the mirror could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `db_path` is `None`: the library needs a database (the binary's demo mode makes one).
    #[error("no database path is configured (set ORCH_DB_PATH, or run the binary for demo mode)")]
    NoDatabase,
    /// Not called from inside a running actix `System`.
    #[error("the mirror must be started inside a running actix System")]
    NoSystem,
    /// Two sections registered under one name.
    #[error("two sections are named {0:?}; every section needs a name of its own")]
    DuplicateSection(SectionName),
    /// The settings do not fit the registered sections (a period for a section that is not registered).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// How to start one registered section's owner once the mirror knows its path and period.
pub(super) type Registration =
    Box<dyn FnOnce(&std::path::Path, &Settings, &DurationFamily, &Arc<Budget>, &Arc<Rounds>) -> Box<dyn OwnerControl>>;

pub(super) fn registration<S: Section>(section: S) -> (SectionName, Registration) {
    let start: Registration = Box::new(move |path, settings, durations, budget, rounds| {
        let actor = ActorSettings {
            period: settings.refresh.get(S::NAME),
            max_stale: settings.max_stale,
            reconcile: settings.reconcile,
            coalesce: settings.coalesce,
            budget: Arc::clone(budget),
        };
        Box::new(Owner::start(section, path, actor, durations, rounds))
    });
    (S::NAME, start)
}

/// Collects registrations of visited sections.
pub(super) struct Registrations(Vec<(SectionName, Registration)>);

impl SectionVisitor for Registrations {
    fn visit<S: Section>(&mut self, section: S) {
        self.0.push(registration(section));
    }
}

/// Starts a mirror with optional parts (a worker probe); see [`MirrorHandle::builder`].
#[must_use]
pub struct MirrorBuilder {
    settings: Settings,
    probe: Option<Box<dyn WorkerProbe>>,
    probe_timeout: Duration,
    extra: Vec<(SectionName, Registration)>,
}

impl MirrorBuilder {
    pub(super) fn new(settings: Settings) -> Self {
        MirrorBuilder { settings, probe: None, probe_timeout: DEFAULT_PROBE_TIMEOUT, extra: Vec::new() }
    }

    /// Feeds the queue section's `breaker`, `max_concurrency` and `poll_interval` from `probe`.
    pub fn worker_probe(mut self, probe: impl WorkerProbe) -> Self {
        self.probe = Some(Box::new(probe));
        self
    }

    /// Registers a host section: it is refreshed by its own actor every
    /// `ORCH_<NAME>_REFRESH_MS` (else `ORCH_REFRESH_MS`) and appears after
    /// `cost` in the envelope, in `sections`, `/health`, subscriptions and
    /// the exposition, in registration order.
    pub fn section(mut self, section: impl Section) -> Self {
        self.extra.push(registration(section));
        self
    }

    /// How long each probe read may take (default 100 ms).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Starts the mirror inside the current actix `System`. With
    /// `metrics_enabled` false nothing is started and the database is never
    /// touched; otherwise `db_path` must be set.
    pub fn start(self) -> Result<MirrorHandle, StartError> {
        let settings = &self.settings;
        let durations = duration_family();
        let budget = Arc::new(Budget::new(settings.cpu_budget_percent));
        let rounds = Arc::new(Rounds::default());
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let inner = |owners: Option<Owners>, commits: Option<CommitWatch>, shortest_period| Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            instance: instance_nonce(),
            snapshot_timeout: settings.snapshot_timeout,
            shortest_period,
            render_cache: RenderCache::default(),
            owners,
            commits,
            durations: durations.clone(),
            budget: Arc::clone(&budget),
            stopping: AtomicBool::new(false),
            stopped: tokio::sync::watch::Sender::new(false),
            next_subscription: AtomicU64::new(1),
        };
        if !settings.metrics_enabled {
            return Ok(MirrorHandle { inner: Arc::new(inner(None, None, settings.refresh.default_period())) });
        }
        let path = settings.db_path.as_deref().ok_or(StartError::NoDatabase)?;
        System::try_current().ok_or(StartError::NoSystem)?;
        let live = Arc::new(Mutex::new(WorkerLive::default()));
        let worker = self.probe.is_some().then(|| Arc::clone(&live));
        let mut registered = Registrations(Vec::new());
        section::built_in(settings.pid_start_tolerance, worker, &mut registered);
        let mut registered = registered.0;
        registered.extend(self.extra);
        let names: Vec<SectionName> = registered.iter().map(|(n, _)| *n).collect();
        check_names(&names, settings)?;
        let shortest_period =
            names.iter().map(|n| settings.refresh.get(*n)).min().unwrap_or(settings.refresh.default_period());
        let owners = Owners(
            registered.into_iter().map(|(_, start)| start(path, settings, &durations, &budget, &rounds)).collect(),
        );
        let targets: Vec<Arc<WakeTarget>> = owners.iter().map(|o| o.wake_target()).collect();
        // Waking a section sooner than its coalescing gap, or while the CPU
        // budget makes it wait, only costs the wake-up.
        let pace = {
            let (budget, coalesce) = (Arc::clone(&budget), settings.coalesce);
            move || coalesce.max(budget.owed(shortest_period))
        };
        let commits = CommitWatch::paced(path, pace, move || targets.iter().for_each(|t| t.wake()));
        let inner = Arc::new(inner(Some(owners), Some(commits), shortest_period));
        let interval = (shortest_period / 2).clamp(WATCHDOG_INTERVAL.0, WATCHDOG_INTERVAL.1);
        actix::spawn(watchdog(Arc::downgrade(&inner), interval));
        if let Some(p) = self.probe {
            let period = settings.refresh.get(SectionName::QUEUE);
            actix::spawn(probe::poll(p, live, period, self.probe_timeout, Arc::downgrade(&inner)));
        }
        tracing::info!(db = %path.display(), "mirror started");
        Ok(MirrorHandle { inner })
    }
}

/// A value no other mirror shares: std's randomly keyed hasher over the
/// clock, the process id and a counter.
pub(super) fn instance_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Every name once, and every configured period for a registered section.
pub(super) fn check_names(names: &[SectionName], settings: &Settings) -> Result<(), StartError> {
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(StartError::DuplicateSection(*name));
        }
    }
    Ok(settings.refresh.check(names)?)
}

// Starting is the builder's: the handle's own module never names it (no import loop).
impl MirrorHandle {
    /// Starts a mirror with `settings` and nothing else (see [`MirrorBuilder::start`]).
    pub fn start(settings: &Settings) -> Result<Self, StartError> {
        Self::builder(settings.clone()).start()
    }

    /// A builder, to add a worker probe before starting.
    pub fn builder(settings: Settings) -> MirrorBuilder {
        MirrorBuilder::new(settings)
    }
}

/// Looks for dead section actors until the mirror is stopped or dropped.
async fn watchdog(inner: Weak<Inner>, interval: Duration) {
    loop {
        // A sleep per round, not an interval: missed rounds are not replayed.
        actix_web::rt::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Some(owners) = &inner.owners {
            owners.iter().for_each(|o| o.check());
        }
    }
}
