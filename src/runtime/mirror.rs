//! The running mirror: one actor per registered section, each on its own
//! arbiter, a watchdog that re-spawns a dead one, subscriptions, an optional
//! worker probe, and the cheap `Clone` handle through which HTTP handlers and
//! host code read them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;

use crate::config::Settings;
use crate::runtime::actor::{ActorSettings, Replica, SectionActor, TRUSTED_HEARTBEAT_AGE};
use crate::runtime::hub::{Hub, SubscriberTotals, SubscriptionId, SubscriptionStats, Update};
use crate::runtime::messages::{Answer, RenderCache, Snapshot, Subscribe, Wake};
use crate::runtime::stats::{
    DurationFamily, PerSection, Reconciliation, RefreshCounters, Restarts, SectionStats, duration_family, section_label,
};
use crate::section::{self, Section, SectionName, SectionVisitor};
use crate::source::commits::{CommitWatch, WakeMode};
use crate::source::db::Database;
use crate::source::probe::{self, DEFAULT_PROBE_TIMEOUT, WorkerLive, WorkerProbe};

/// How often the watchdog looks for dead section actors: half the shortest
/// refresh period, within these bounds. (Each look wakes the System thread:
/// at ten a second it was most of an idle mirror's CPU.)
pub const WATCHDOG_INTERVAL: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(500));
/// The longest a dead section actor waits to be re-spawned (otherwise its period).
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);

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

/// Where the commit watch sends one section's wake-ups: to its actor of the
/// moment (a re-spawned one included), at most one message in its mailbox.
struct WakeTarget {
    /// A wake-up is in the mailbox (the actor clears it when it handles it).
    pending: Arc<AtomicBool>,
    recipient: RwLock<Option<Recipient<Wake>>>,
}

impl WakeTarget {
    fn new() -> Self {
        Self { pending: Arc::default(), recipient: RwLock::new(None) }
    }

    fn set(&self, recipient: Recipient<Wake>) {
        *self.recipient.write().unwrap_or_else(|p| p.into_inner()) = Some(recipient);
        self.pending.store(false, Ordering::SeqCst);
    }

    /// Called on the watch's thread for every change to the database's files.
    fn wake(&self) {
        if self.pending.swap(true, Ordering::SeqCst) {
            return; // one is on its way; it will see this commit too
        }
        let sent = self
            .recipient
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|r| r.try_send(Wake(Arc::clone(&self.pending))).is_ok());
        if !sent {
            self.pending.store(false, Ordering::SeqCst);
        }
    }
}

/// One section's actor, the arbiter (thread) it runs on, and how to make it again.
struct Owner<S: Section> {
    section: Arc<S>,
    db: Arc<Database>,
    settings: ActorSettings,
    hub: Arc<Hub>,
    stats: Arc<SectionStats>,
    replica: Arc<Replica<S::Data>>,
    running: RwLock<(Addr<SectionActor<S>>, Arbiter)>,
    dead_since: Mutex<Option<Instant>>,
    restarts: AtomicU64,
    wake: Arc<WakeTarget>,
}

impl<S: Section> Owner<S> {
    fn start(section: S, path: &std::path::Path, settings: ActorSettings, durations: &DurationFamily) -> Self {
        // Each section has its own connection: `PRAGMA data_version` is per connection.
        let db = &Arc::new(Database::new(path));
        let section = Arc::new(section);
        let hub = Arc::new(Hub::new(S::NAME));
        let stats = Arc::new(SectionStats::new(durations.get_or_create(&section_label(S::NAME)).clone()));
        let replica = Arc::new(Replica::new(settings));
        let wake = Arc::new(WakeTarget::new());
        let running = Self::spawn(&section, db, settings, &hub, &stats, &replica);
        wake.set(running.0.clone().recipient());
        Self {
            section,
            db: Arc::clone(db),
            settings,
            hub,
            stats,
            replica,
            running: RwLock::new(running),
            dead_since: Mutex::new(None),
            restarts: AtomicU64::new(0),
            wake,
        }
    }

    fn spawn(
        section: &Arc<S>,
        db: &Arc<Database>,
        settings: ActorSettings,
        hub: &Arc<Hub>,
        stats: &Arc<SectionStats>,
        replica: &Arc<Replica<S::Data>>,
    ) -> (Addr<SectionActor<S>>, Arbiter) {
        // Each owner gets its own arbiter (thread): actors started from the
        // System thread would otherwise share it with everything else.
        let arbiter = Arbiter::new();
        let (section, db, hub, stats) = (Arc::clone(section), Arc::clone(db), Arc::clone(hub), Arc::clone(stats));
        let replica = Arc::clone(replica);
        let addr = SectionActor::start_in_arbiter(&arbiter.handle(), move |_| {
            SectionActor::with_shared(section, db, settings, hub, stats, replica)
        });
        (addr, arbiter)
    }

    fn addr(&self) -> Addr<SectionActor<S>> {
        self.running.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }
}

/// What the handle and the watchdog do to any owner, whatever its section.
trait OwnerControl: Send + Sync {
    fn name(&self) -> SectionName;
    fn ask(&self, timeout: Duration) -> LocalBoxFuture<'static, Answer>;
    fn stats(&self) -> &SectionStats;
    fn check(&self);
    fn stop(&self);
    fn restarts(&self) -> u64;
    fn hub(&self) -> &Hub;
    fn subscribe(&self, id: SubscriptionId, recipient: Recipient<Update>);
    fn arbiter_spawn(&self, f: Box<dyn FnOnce() + Send>);
    fn wake_target(&self) -> Arc<WakeTarget>;
}

impl<S: Section> OwnerControl for Owner<S> {
    fn name(&self) -> SectionName {
        S::NAME
    }

    /// The section's answer: read from the replica while the actor beats
    /// (no message, no timer), else asked of the actor with `timeout`.
    fn ask(&self, timeout: Duration) -> LocalBoxFuture<'static, Answer> {
        let addr = self.addr();
        if addr.connected()
            && let Some(reply) = self.replica.read((timeout / 2).min(TRUSTED_HEARTBEAT_AGE))
        {
            return Box::pin(futures_util::future::ready(Answer::of::<S>(Ok(reply))));
        }
        let request = addr.send(Snapshot::<S::Data>::new()).timeout(timeout);
        let stats = Arc::clone(&self.stats);
        Box::pin(async move {
            let reply = request.await;
            if matches!(reply, Err(MailboxError::Timeout)) {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Answer::of::<S>(reply)
        })
    }

    fn stats(&self) -> &SectionStats {
        &self.stats
    }

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
                let fresh = Self::spawn(&self.section, &self.db, self.settings, &self.hub, &self.stats, &self.replica);
                self.wake.set(fresh.0.clone().recipient());
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

    fn wake_target(&self) -> Arc<WakeTarget> {
        Arc::clone(&self.wake)
    }
}

/// Every registered section's owner, in envelope order.
struct Owners(Vec<Box<dyn OwnerControl>>);

impl Owners {
    fn iter(&self) -> impl Iterator<Item = &dyn OwnerControl> {
        self.0.iter().map(|o| &**o)
    }

    fn get(&self, section: SectionName) -> Option<&dyn OwnerControl> {
        self.iter().find(|o| o.name() == section)
    }
}

/// How to start one registered section's owner once the mirror knows its path and period.
type Registration = Box<dyn FnOnce(&std::path::Path, &Settings, &DurationFamily) -> Box<dyn OwnerControl>>;

fn registration<S: Section>(section: S) -> (SectionName, Registration) {
    let start: Registration = Box::new(move |path, settings, durations| {
        let actor = ActorSettings {
            period: settings.refresh.get(S::NAME),
            max_stale: settings.max_stale,
            reconcile: settings.reconcile,
            coalesce: settings.coalesce,
        };
        Box::new(Owner::start(section, path, actor, durations))
    });
    (S::NAME, start)
}

/// Collects registrations of visited sections.
struct Registrations(Vec<(SectionName, Registration)>);

impl SectionVisitor for Registrations {
    fn visit<S: Section>(&mut self, section: S) {
        self.0.push(registration(section));
    }
}

/// State an upper layer keeps per mirror (the stream broker), made on first
/// use and stopped with the mirror.
pub trait Attachment: std::any::Any + Send + Sync {
    /// The mirror is stopping: end whatever this serves.
    fn stop(&self);
}

fn downcast<T: Attachment>(a: &Arc<dyn Attachment>) -> Option<Arc<T>> {
    let any: Arc<dyn std::any::Any + Send + Sync> = a.clone();
    any.downcast::<T>().ok()
}

struct Inner {
    /// Tells mirrors apart (per-thread caches are keyed by it).
    id: u64,
    /// Tells this mirror apart from every other, in any process and before
    /// or after a restart (random): validators such as the ETag include it.
    instance: u64,
    snapshot_timeout: Duration,
    /// `ORCH_UI_ENABLED`, `ORCH_MAX_STREAMS` and `ORCH_STREAM_HEARTBEAT_MS`.
    ui_enabled: bool,
    /// `ORCH_MAX_STREAMS`, lowered by the server to what its connection cap leaves.
    max_streams: std::sync::atomic::AtomicUsize,
    stream_heartbeat: Duration,
    /// The shortest refresh period of any section.
    shortest_period: Duration,
    /// A thread of its own for work that serves every client at once (the
    /// stream broker), apart from the section actors and the HTTP workers.
    aux: Option<Arbiter>,
    attachments: Mutex<Vec<Arc<dyn Attachment>>>,
    render_cache: RenderCache,
    owners: Option<Owners>,
    /// The watch on the database's files that wakes the sections on a commit.
    commits: Option<CommitWatch>,
    durations: DurationFamily,
    stopping: AtomicBool,
    next_subscription: AtomicU64,
}

impl Inner {
    fn stop_attachments(&self) {
        let attachments = std::mem::take(&mut *self.attachments.lock().unwrap_or_else(|p| p.into_inner()));
        attachments.iter().for_each(|a| a.stop());
        if let Some(aux) = &self.aux {
            aux.stop();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_attachments();
        if let Some(owners) = &self.owners {
            owners.iter().for_each(|o| o.stop());
        }
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
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let inner = |owners: Option<Owners>, commits: Option<CommitWatch>, shortest_period| Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            instance: instance_nonce(),
            snapshot_timeout: settings.snapshot_timeout,
            ui_enabled: settings.ui_enabled,
            max_streams: std::sync::atomic::AtomicUsize::new(settings.max_streams),
            stream_heartbeat: settings.stream_heartbeat,
            shortest_period,
            aux: owners.as_ref().map(|_| Arbiter::new()),
            attachments: Mutex::new(Vec::new()),
            render_cache: RenderCache::default(),
            owners,
            commits,
            durations: durations.clone(),
            stopping: AtomicBool::new(false),
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
        let owners = Owners(registered.into_iter().map(|(_, start)| start(path, settings, &durations)).collect());
        let targets: Vec<Arc<WakeTarget>> = owners.iter().map(|o| o.wake_target()).collect();
        let commits = CommitWatch::start(path, move || targets.iter().for_each(|t| t.wake()));
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
        MirrorBuilder { settings, probe: None, probe_timeout: DEFAULT_PROBE_TIMEOUT, extra: Vec::new() }
    }

    /// False when the kill switch is off: no actors, no database.
    pub fn enabled(&self) -> bool {
        self.inner.owners.is_some()
    }

    /// How long a response waits for each section actor (`ORCH_SNAPSHOT_TIMEOUT_MS`).
    pub fn snapshot_timeout(&self) -> Duration {
        self.inner.snapshot_timeout
    }

    /// This mirror's identity within the process.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// A random number that no other mirror, in this process or another,
    /// before or after a restart, shares (for validators such as the ETag).
    pub fn instance(&self) -> u64 {
        self.inner.instance
    }

    /// `ORCH_UI_ENABLED`: whether the routes include the live page at `/`.
    pub fn ui_enabled(&self) -> bool {
        self.inner.ui_enabled
    }

    /// `ORCH_MAX_STREAMS`: how many `/metrics/stream` clients may be open at once.
    pub fn max_streams(&self) -> usize {
        self.inner.max_streams.load(Ordering::SeqCst)
    }

    /// Lowers the stream cap to `n` (the server does, to keep connections
    /// for the other routes); never raises it. Streams already open stay.
    pub fn cap_streams(&self, n: usize) {
        self.inner.max_streams.fetch_min(n, Ordering::SeqCst);
    }

    /// `ORCH_STREAM_HEARTBEAT_MS`: how often an idle stream sends a comment line.
    pub fn stream_heartbeat(&self) -> Duration {
        self.inner.stream_heartbeat
    }

    /// The shortest refresh period of any section.
    pub fn shortest_period(&self) -> Duration {
        self.inner.shortest_period
    }

    /// The mirror's attachment of type `T`, made by `make` on first use (on
    /// the mirror's own thread for such work, given as `aux`); `None` when
    /// the mirror is disabled or stopped.
    pub fn attachment<T: Attachment>(&self, make: impl FnOnce(&ArbiterHandle) -> T) -> Option<Arc<T>> {
        let aux = self.inner.aux.as_ref()?;
        if self.inner.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let mut attachments = self.inner.attachments.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = attachments.iter().find_map(|a| downcast::<T>(a)) {
            return Some(found);
        }
        let made = Arc::new(make(&aux.handle()));
        attachments.push(Arc::clone(&made) as Arc<dyn Attachment>);
        Some(made)
    }

    /// The attachment of type `T`, if one was made.
    pub fn attached<T: Attachment>(&self) -> Option<Arc<T>> {
        let attachments = self.inner.attachments.lock().unwrap_or_else(|p| p.into_inner());
        attachments.iter().find_map(|a| downcast::<T>(a))
    }

    /// A handle that does not keep the mirror running.
    pub fn downgrade(&self) -> WeakMirrorHandle {
        WeakMirrorHandle(Arc::downgrade(&self.inner))
    }

    /// The latest rendering of each section, shared by every response.
    pub fn render_cache(&self) -> &RenderCache {
        &self.inner.render_cache
    }

    /// Every section actor's answer, in envelope order; `None` when disabled.
    pub async fn answers(&self) -> Option<Vec<Answer>> {
        let owners = self.inner.owners.as_ref()?;
        let t = self.inner.snapshot_timeout;
        Some(futures_util::future::join_all(owners.iter().map(|o| o.ask(t))).await)
    }

    /// The registered sections, in envelope order (empty when disabled).
    pub fn sections(&self) -> Vec<SectionName> {
        self.inner.owners.iter().flat_map(|o| o.iter().map(|o| o.name())).collect()
    }

    /// How often each section's actor was found dead and re-spawned.
    pub fn restarts(&self) -> Restarts {
        self.per_section(|o| o.restarts())
    }

    /// Loaded, skipped (database unchanged) and failed refreshes, per section.
    pub fn refresh_counters(&self) -> PerSection<RefreshCounters> {
        self.per_section(|o| o.stats().counters())
    }

    /// Each section's last full recomputation and the drift reconciliations found.
    pub fn reconciliations(&self) -> PerSection<Reconciliation> {
        self.per_section(|o| o.stats().reconciliation())
    }

    /// Snapshot requests each section's actor did not answer within the timeout.
    pub fn snapshot_timeouts(&self) -> PerSection<u64> {
        self.per_section(|o| o.stats().timeouts.load(Ordering::Relaxed))
    }

    /// Refresh durations per section (a `section`-labelled histogram family); `None` when disabled.
    pub fn refresh_durations(&self) -> Option<DurationFamily> {
        self.inner.owners.as_ref().map(|_| self.inner.durations.clone())
    }

    /// How each section learns that it should look at the database: woken by
    /// commits (a watch on the database's files), or by its timer alone, and why.
    pub fn wake_modes(&self) -> PerSection<WakeMode> {
        let mode = self.inner.commits.as_ref().map(CommitWatch::mode);
        self.per_section(|_| mode.clone().unwrap_or_else(|| WakeMode::timer("no watch".into())))
    }

    /// Live subscriptions and dropped updates, per section.
    pub fn subscriber_totals(&self) -> PerSection<SubscriberTotals> {
        self.per_section(|o| o.hub().totals())
    }

    fn per_section<T>(&self, f: impl Fn(&dyn OwnerControl) -> T) -> PerSection<T> {
        match &self.inner.owners {
            Some(owners) => PerSection::new(owners.iter().map(|o| (o.name(), f(o))).collect()),
            None => PerSection::default(),
        }
    }

    /// Subscribes `recipient` to one section: it receives the current value at
    /// once (when there is one), then one [`Update`] per refresh that changed
    /// the data. `None` when the mirror is disabled or has no such section.
    pub fn subscribe(&self, section: SectionName, recipient: Recipient<Update>) -> Option<SubscriptionId> {
        let owner = self.inner.owners.as_ref()?.get(section)?;
        let id = SubscriptionId(self.inner.next_subscription.fetch_add(1, Ordering::Relaxed));
        owner.subscribe(id, recipient);
        Some(id)
    }

    /// Subscribes `recipient` to every section (one subscription each).
    pub fn subscribe_all(&self, recipient: Recipient<Update>) -> Vec<SubscriptionId> {
        self.sections().into_iter().filter_map(|s| self.subscribe(s, recipient.clone())).collect()
    }

    /// Ends a subscription; false when it was not active (already removed, or unknown).
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let Some(owners) = &self.inner.owners else {
            return false;
        };
        owners.iter().any(|o| o.hub().remove(id))
    }

    /// Delivery counters of every active subscription.
    pub fn subscriptions(&self) -> Vec<SubscriptionStats> {
        let Some(owners) = &self.inner.owners else {
            return Vec::new();
        };
        owners.iter().flat_map(|o| o.hub().stats()).collect()
    }

    /// Stops every section actor for good (no restarts) and ends every
    /// open stream; later snapshots say `unavailable`.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop_attachments();
        if let Some(owners) = &self.inner.owners {
            owners.iter().for_each(|o| o.stop());
        }
    }

    /// Fault injection for tests: stops one section's arbiter, killing its
    /// actor as a panic would (the watchdog re-spawns it).
    #[doc(hidden)]
    pub fn kill_section(&self, section: SectionName) {
        if let Some(owner) = self.inner.owners.as_ref().and_then(|o| o.get(section)) {
            owner.stop();
        }
    }

    /// Fault injection for tests: blocks one section actor's thread for `dur`.
    #[doc(hidden)]
    pub fn stall_section(&self, section: SectionName, dur: Duration) {
        if let Some(owner) = self.inner.owners.as_ref().and_then(|o| o.get(section)) {
            owner.arbiter_spawn(Box::new(move || std::thread::sleep(dur)));
        }
    }
}

/// A [`MirrorHandle`] that does not keep the mirror running.
#[derive(Clone, Debug)]
pub struct WeakMirrorHandle(Weak<Inner>);

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("id", &self.id).finish_non_exhaustive()
    }
}

impl WeakMirrorHandle {
    /// The mirror, while it runs.
    pub fn upgrade(&self) -> Option<MirrorHandle> {
        self.0.upgrade().map(|inner| MirrorHandle { inner })
    }
}

/// Looks for dead section actors until the mirror is stopped or dropped.
/// A value no other mirror shares: std's randomly keyed hasher over the
/// clock, the process id and a counter.
fn instance_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

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

/// Every name once, and every configured period for a registered section.
fn check_names(names: &[SectionName], settings: &Settings) -> Result<(), StartError> {
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(StartError::DuplicateSection(*name));
        }
    }
    Ok(settings.refresh.check(names)?)
}
