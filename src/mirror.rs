//! The running mirror: four section actors, each on its own arbiter, a
//! watchdog that re-spawns a dead one, subscriptions, an optional worker
//! probe, and the cheap `Clone` handle through which HTTP handlers and host
//! code read them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use crate::actor::{ActorSettings, SectionActor};
use crate::config::Settings;
use crate::db::Database;
use crate::envelope::{self, Clock, Envelope, Health, Replies};
use crate::messages::{SectionReply, Snapshot, Subscribe};
use crate::probe::{self, DEFAULT_PROBE_TIMEOUT, WorkerLive, WorkerProbe};
use crate::prometheus::{DurationFamily, duration_family, section_label};
use crate::section::{Agents, Cost, Queue, Section, SectionName, Stages};
use crate::subscribe::{Hub, RefreshCounters, SubscriberTotals, SubscriptionId, SubscriptionStats, Update};

/// How often the watchdog looks for dead section actors.
pub const WATCHDOG_INTERVAL: Duration = Duration::from_millis(100);
/// The longest a dead section actor waits to be re-spawned (otherwise its period).
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);

/// Why the mirror could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `db_path` is `None`: the library needs a database (the binary's demo mode makes one).
    #[error("no database path is configured (set ORCH_DB_PATH, or run the binary for demo mode)")]
    NoDatabase,
    /// Not called from inside a running actix `System`.
    #[error("the mirror must be started inside a running actix System")]
    NoSystem,
}

/// One section's actor, the arbiter (thread) it runs on, and how to make it again.
struct Owner<S: Section> {
    section: Arc<S>,
    db: Arc<Database>,
    settings: ActorSettings,
    hub: Arc<Hub>,
    running: RwLock<(Addr<SectionActor<S>>, Arbiter)>,
    dead_since: Mutex<Option<Instant>>,
    restarts: AtomicU64,
}

impl<S: Section> Owner<S> {
    fn start(section: S, path: &std::path::Path, settings: ActorSettings, durations: &DurationFamily) -> Self {
        // Each section has its own connection: `PRAGMA data_version` is per connection.
        let db = &Arc::new(Database::new(path));
        let section = Arc::new(section);
        let hub = Arc::new(Hub::with_durations(S::NAME, durations.get_or_create(&section_label(S::NAME)).clone()));
        let running = Self::spawn(&section, db, settings, &hub);
        Self {
            section,
            db: Arc::clone(db),
            settings,
            hub,
            running: RwLock::new(running),
            dead_since: Mutex::new(None),
            restarts: AtomicU64::new(0),
        }
    }

    fn spawn(
        section: &Arc<S>,
        db: &Arc<Database>,
        settings: ActorSettings,
        hub: &Arc<Hub>,
    ) -> (Addr<SectionActor<S>>, Arbiter) {
        // Each owner gets its own arbiter (thread): actors started from the
        // System thread would otherwise share it with everything else.
        let arbiter = Arbiter::new();
        let (section, db, hub) = (Arc::clone(section), Arc::clone(db), Arc::clone(hub));
        let addr = SectionActor::start_in_arbiter(&arbiter.handle(), move |_| {
            SectionActor::with_hub(section, db, settings, hub)
        });
        (addr, arbiter)
    }

    fn addr(&self) -> Addr<SectionActor<S>> {
        self.running.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    async fn ask(&self, timeout: Duration) -> Result<SectionReply<S::Data>, MailboxError> {
        let reply = self.addr().send(Snapshot::new()).timeout(timeout).await;
        if matches!(reply, Err(MailboxError::Timeout)) {
            self.hub.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        reply
    }
}

/// What the handle and the watchdog do to any owner, whatever its section.
trait OwnerControl {
    fn check(&self);
    fn stop(&self);
    fn restarts(&self) -> u64;
    fn hub(&self) -> &Hub;
    fn subscribe(&self, id: SubscriptionId, recipient: Recipient<Update>);
    fn arbiter_spawn(&self, f: Box<dyn FnOnce() + Send>);
}

impl<S: Section> OwnerControl for Owner<S> {
    /// Re-spawns the actor once it has been dead for about one refresh period.
    /// A panic drops an actix actor for good (the supervisor only restarts
    /// after a normal stop), so this is what brings a section back.
    fn check(&self) {
        let alive = self.addr().connected();
        let mut dead_since = self.dead_since.lock().unwrap_or_else(|p| p.into_inner());
        match (*dead_since, alive) {
            (_, true) => *dead_since = None,
            (None, false) => *dead_since = Some(Instant::now()),
            (Some(since), false) if since.elapsed() >= self.settings.period.min(MAX_RESTART_DELAY) => {
                let fresh = Self::spawn(&self.section, &self.db, self.settings, &self.hub);
                let old = std::mem::replace(&mut *self.running.write().unwrap_or_else(|p| p.into_inner()), fresh);
                old.1.stop();
                *dead_since = None;
                let n = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(section = %S::NAME, restarts = n, "section actor was dead; re-spawned");
            }
            (Some(_), false) => {}
        }
    }

    fn stop(&self) {
        self.running.read().unwrap_or_else(|p| p.into_inner()).1.stop();
    }

    fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn subscribe(&self, id: SubscriptionId, recipient: Recipient<Update>) {
        let addr = self.addr();
        if addr.connected() {
            // Through the actor, so the initial value is ordered before later updates.
            addr.do_send(Subscribe { id, recipient });
        } else {
            // A dead actor's successor publishes its first refresh to the hub.
            self.hub.add(id, recipient);
        }
    }

    fn arbiter_spawn(&self, f: Box<dyn FnOnce() + Send>) {
        self.running.read().unwrap_or_else(|p| p.into_inner()).1.spawn_fn(f);
    }
}

struct Owners {
    stages: Owner<Stages>,
    queue: Owner<Queue>,
    agents: Owner<Agents>,
    cost: Owner<Cost>,
}

impl Owners {
    fn get(&self, section: SectionName) -> &dyn OwnerControl {
        match section {
            SectionName::Stages => &self.stages,
            SectionName::Queue => &self.queue,
            SectionName::Agents => &self.agents,
            SectionName::Cost => &self.cost,
        }
    }
}

struct Inner {
    snapshot_timeout: Duration,
    owners: Option<Owners>,
    durations: DurationFamily,
    stopping: AtomicBool,
    next_subscription: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(owners) = &self.owners {
            SectionName::ALL.iter().for_each(|s| owners.get(*s).stop());
        }
    }
}

/// One value per section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PerSection<T> {
    /// `stages`.
    pub stages: T,
    /// `queue`.
    pub queue: T,
    /// `agents`.
    pub agents: T,
    /// `cost`.
    pub cost: T,
}

impl<T> PerSection<T> {
    fn from_fn(mut f: impl FnMut(SectionName) -> T) -> Self {
        Self {
            stages: f(SectionName::Stages),
            queue: f(SectionName::Queue),
            agents: f(SectionName::Agents),
            cost: f(SectionName::Cost),
        }
    }
}

/// Restarts of each section's actor since start-up.
pub type Restarts = PerSection<u64>;

/// Starts a mirror with optional parts (a worker probe); see [`MirrorHandle::builder`].
#[must_use]
pub struct MirrorBuilder {
    settings: Settings,
    probe: Option<Box<dyn WorkerProbe>>,
    probe_timeout: Duration,
}

impl MirrorBuilder {
    /// Feeds the queue section's `breaker`, `max_concurrency` and `poll_interval` from `probe`.
    pub fn worker_probe(mut self, probe: impl WorkerProbe) -> Self {
        self.probe = Some(Box::new(probe));
        self
    }

    /// How long each probe read may take (default [`DEFAULT_PROBE_TIMEOUT`]).
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
        let inner = |owners| Inner {
            snapshot_timeout: settings.snapshot_timeout,
            owners,
            durations: durations.clone(),
            stopping: AtomicBool::new(false),
            next_subscription: AtomicU64::new(1),
        };
        if !settings.metrics_enabled {
            return Ok(MirrorHandle { inner: Arc::new(inner(None)) });
        }
        let path = settings.db_path.as_deref().ok_or(StartError::NoDatabase)?;
        System::try_current().ok_or(StartError::NoSystem)?;
        let actor = |s: SectionName| ActorSettings { period: settings.refresh.get(s), max_stale: settings.max_stale };
        let live = Arc::new(Mutex::new(WorkerLive::default()));
        let queue = if self.probe.is_some() { Queue::with_worker(Arc::clone(&live)) } else { Queue::new() };
        let owners = Owners {
            stages: Owner::start(Stages, path, actor(SectionName::Stages), &durations),
            queue: Owner::start(queue, path, actor(SectionName::Queue), &durations),
            agents: Owner::start(
                Agents::new(settings.pid_start_tolerance),
                path,
                actor(SectionName::Agents),
                &durations,
            ),
            cost: Owner::start(Cost, path, actor(SectionName::Cost), &durations),
        };
        let inner = Arc::new(inner(Some(owners)));
        actix::spawn(watchdog(Arc::downgrade(&inner)));
        if let Some(p) = self.probe {
            actix::spawn(probe::poll(p, live, settings.refresh.queue, self.probe_timeout, Arc::downgrade(&inner)));
        }
        tracing::info!(db = %path.display(), "mirror started");
        Ok(MirrorHandle { inner })
    }
}

/// A running mirror. Cloning is cheap; the actors stop when the last clone is
/// dropped or [`MirrorHandle::stop`] is called.
#[derive(Clone)]
pub struct MirrorHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MirrorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorHandle").field("enabled", &self.enabled()).finish()
    }
}

impl MirrorHandle {
    /// Starts a mirror with `settings` and nothing else (see [`MirrorBuilder::start`]).
    pub fn start(settings: &Settings) -> Result<Self, StartError> {
        Self::builder(settings.clone()).start()
    }

    /// A builder, to add a worker probe before starting.
    pub fn builder(settings: Settings) -> MirrorBuilder {
        MirrorBuilder { settings, probe: None, probe_timeout: DEFAULT_PROBE_TIMEOUT }
    }

    /// False when the kill switch is off: no actors, no database.
    pub fn enabled(&self) -> bool {
        self.inner.owners.is_some()
    }

    /// The whole envelope, as `/metrics` serves it; `None` when disabled.
    ///
    /// Asks the four section actors at once, each with the snapshot timeout,
    /// so it never waits longer than one timeout.
    pub async fn snapshot(&self) -> Option<Envelope> {
        let owners = self.inner.owners.as_ref()?;
        let t = self.inner.snapshot_timeout;
        let (stages, queue, agents, cost) =
            futures_util::join!(owners.stages.ask(t), owners.queue.ask(t), owners.agents.ask(t), owners.cost.ask(t));
        let replies = Replies { stages, queue, agents, cost };
        Some(envelope::assemble(replies, Clock::now(), t))
    }

    /// `/health`'s answer; `None` when disabled.
    pub async fn health(&self) -> Option<Health> {
        let envelope = self.snapshot().await?;
        Some(Health::of(&envelope, self.restarts(), self.subscriber_totals()))
    }

    /// How often each section's actor was found dead and re-spawned.
    pub fn restarts(&self) -> Restarts {
        self.per_section(|o| o.restarts())
    }

    /// Loaded, skipped (database unchanged) and failed refreshes, per section.
    pub fn refresh_counters(&self) -> PerSection<RefreshCounters> {
        self.per_section(|o| o.hub().counters())
    }

    /// Snapshot requests each section's actor did not answer within the timeout.
    pub fn snapshot_timeouts(&self) -> PerSection<u64> {
        self.per_section(|o| o.hub().timeouts.load(Ordering::Relaxed))
    }

    /// Refresh durations per section (a `section`-labelled histogram family); `None` when disabled.
    pub fn refresh_durations(&self) -> Option<DurationFamily> {
        self.inner.owners.as_ref().map(|_| self.inner.durations.clone())
    }

    /// Live subscriptions and dropped updates, per section.
    pub fn subscriber_totals(&self) -> PerSection<SubscriberTotals> {
        self.per_section(|o| o.hub().totals())
    }

    fn per_section<T: Default>(&self, f: impl Fn(&dyn OwnerControl) -> T) -> PerSection<T> {
        match &self.inner.owners {
            Some(owners) => PerSection::from_fn(|s| f(owners.get(s))),
            None => PerSection::from_fn(|_| T::default()),
        }
    }

    /// Subscribes `recipient` to one section: it receives the current value at
    /// once (when there is one), then one [`Update`] per refresh that changed
    /// the data. `None` when the mirror is disabled.
    pub fn subscribe(&self, section: SectionName, recipient: Recipient<Update>) -> Option<SubscriptionId> {
        let owners = self.inner.owners.as_ref()?;
        let id = SubscriptionId(self.inner.next_subscription.fetch_add(1, Ordering::Relaxed));
        owners.get(section).subscribe(id, recipient);
        Some(id)
    }

    /// Subscribes `recipient` to every section (one subscription each).
    pub fn subscribe_all(&self, recipient: Recipient<Update>) -> Vec<SubscriptionId> {
        SectionName::ALL.iter().filter_map(|s| self.subscribe(*s, recipient.clone())).collect()
    }

    /// Ends a subscription; false when it was not active (already removed, or unknown).
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let Some(owners) = &self.inner.owners else {
            return false;
        };
        SectionName::ALL.iter().any(|s| owners.get(*s).hub().remove(id))
    }

    /// Delivery counters of every active subscription.
    pub fn subscriptions(&self) -> Vec<SubscriptionStats> {
        let Some(owners) = &self.inner.owners else {
            return Vec::new();
        };
        SectionName::ALL.iter().flat_map(|s| owners.get(*s).hub().stats()).collect()
    }

    /// Stops every section actor for good (no restarts); later snapshots say `unavailable`.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Some(owners) = &self.inner.owners {
            SectionName::ALL.iter().for_each(|s| owners.get(*s).stop());
        }
    }

    /// Fault injection for tests: stops one section's arbiter, killing its
    /// actor as a panic would (the watchdog re-spawns it).
    #[doc(hidden)]
    pub fn kill_section(&self, section: SectionName) {
        if let Some(owners) = &self.inner.owners {
            owners.get(section).stop();
        }
    }

    /// Fault injection for tests: blocks one section actor's thread for `dur`.
    #[doc(hidden)]
    pub fn stall_section(&self, section: SectionName, dur: Duration) {
        if let Some(owners) = &self.inner.owners {
            owners.get(section).arbiter_spawn(Box::new(move || std::thread::sleep(dur)));
        }
    }
}

/// Looks for dead section actors until the mirror is stopped or dropped.
async fn watchdog(inner: Weak<Inner>) {
    loop {
        // A sleep per round, not an interval: missed rounds are not replayed.
        actix_web::rt::time::sleep(WATCHDOG_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Some(owners) = &inner.owners {
            SectionName::ALL.iter().for_each(|s| owners.get(*s).check());
        }
    }
}
