//! Supervision: each section's actor on its own arbiter (its owner), the
//! check that re-spawns a dead one (the watchdog in `builder` runs it), and
//! where commits wake each section.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;

use crate::runtime::actor::SectionActor;
use crate::runtime::clock::Clock;
use crate::runtime::replica::{Replica, TRUSTED_HEARTBEAT_AGE};
use crate::runtime::timing::ActorSettings;

/// The oldest heartbeat a request with snapshot timeout `timeout` trusts.
pub(super) fn trusted_age(timeout: Duration) -> Duration {
    (timeout / 2).min(TRUSTED_HEARTBEAT_AGE)
}
use crate::runtime::hub::{Hub, Listener, SubscriptionId};
use crate::runtime::messages::{Answer, Snapshot, Subscribe, Wake};
use crate::runtime::stats::{DurationFamily, SectionStats, section_label};
use crate::section::{Section, SectionName};
use crate::source::db::Database;

/// How often the watchdog looks for dead section actors: half the shortest
/// refresh period, within these bounds. (Each look wakes the System thread:
/// at ten a second it was most of an idle mirror's CPU.)
pub(super) const WATCHDOG_INTERVAL: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(500));
/// The longest a dead section actor waits to be re-spawned (otherwise its period).
pub(super) const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);

/// Where the commit watch sends one section's wake-ups: to its actor of the
/// moment (a re-spawned one included), at most one message in its mailbox.
pub(super) struct WakeTarget {
    /// A wake-up is in the mailbox (the actor clears it when it handles it).
    pub(super) pending: Arc<AtomicBool>,
    pub(super) recipient: RwLock<Option<Recipient<Wake>>>,
}

impl WakeTarget {
    pub(super) fn new() -> Self {
        Self { pending: Arc::default(), recipient: RwLock::new(None) }
    }

    pub(super) fn set(&self, recipient: Recipient<Wake>) {
        *self.recipient.write().unwrap_or_else(|p| p.into_inner()) = Some(recipient);
        self.pending.store(false, Ordering::SeqCst);
    }

    /// Called on the watch's thread for every change to the database's files.
    pub(super) fn wake(&self) {
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
pub(super) struct Owner<S: Section> {
    pub(super) section: Arc<S>,
    pub(super) db: Arc<Database>,
    pub(super) settings: ActorSettings,
    pub(super) hub: Arc<Hub>,
    pub(super) stats: Arc<SectionStats>,
    pub(super) replica: Arc<Replica<S::Data>>,
    pub(super) running: RwLock<(Addr<SectionActor<S>>, Arbiter)>,
    pub(super) dead_since: Mutex<Option<Instant>>,
    pub(super) restarts: AtomicU64,
    pub(super) wake: Arc<WakeTarget>,
}

impl<S: Section> Owner<S> {
    pub(super) fn start(
        section: S,
        path: &std::path::Path,
        settings: ActorSettings,
        durations: &DurationFamily,
        rounds: &Arc<crate::source::round::Rounds>,
    ) -> Self {
        // Each section has its own view of the file (and its own reading of
        // what commits change); the sections of a round share a connection.
        let db = &Arc::new(Database::sharing(path, Arc::clone(rounds)));
        let section = Arc::new(section);
        let hub = Arc::new(Hub::new(S::NAME));
        let stats = Arc::new(SectionStats::new(durations.get_or_create(&section_label(S::NAME)).clone()));
        let replica = Arc::new(Replica::new(settings.clone()));
        let wake = Arc::new(WakeTarget::new());
        let running = Self::spawn(&section, db, settings.clone(), &hub, &stats, &replica);
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

    pub(super) fn spawn(
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

    pub(super) fn addr(&self) -> Addr<SectionActor<S>> {
        self.running.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }
}

/// What the handle and the watchdog do to any owner, whatever its section.
pub(super) trait OwnerControl: Send + Sync {
    fn name(&self) -> SectionName;
    fn ask(&self, timeout: Duration) -> LocalBoxFuture<'static, Answer>;
    /// The answer from the replica at `now`, without a message or an
    /// allocation, when the actor is alive and beat within `trust`.
    fn read_replica(&self, trust: Duration, now: Clock) -> Option<Answer>;
    fn stats(&self) -> &SectionStats;
    fn check(&self);
    fn stop(&self);
    fn restarts(&self) -> u64;
    fn hub(&self) -> &Hub;
    fn subscribe(&self, id: SubscriptionId, listener: Listener);
    #[cfg(any(test, feature = "test-util"))]
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
        if let Some(answer) = self.read_replica(trusted_age(timeout), Clock::now()) {
            return Box::pin(futures_util::future::ready(answer));
        }
        let request = self.addr().send(Snapshot::<S::Data>::new()).timeout(timeout);
        let stats = Arc::clone(&self.stats);
        Box::pin(async move {
            let reply = request.await;
            if matches!(reply, Err(MailboxError::Timeout)) {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Answer::of::<S>(reply)
        })
    }

    fn read_replica(&self, trust: Duration, now: Clock) -> Option<Answer> {
        // Looked at in place: cloning the address costs two atomic counts.
        if !self.running.read().unwrap_or_else(|p| p.into_inner()).0.connected() {
            return None;
        }
        Some(Answer::of::<S>(Ok(self.replica.read(trust, now)?)))
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
                let fresh =
                    Self::spawn(&self.section, &self.db, self.settings.clone(), &self.hub, &self.stats, &self.replica);
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

    fn subscribe(&self, id: SubscriptionId, listener: Listener) {
        let addr = self.addr();
        if addr.connected() {
            // Through the actor, so the initial value is ordered before later updates.
            addr.do_send(Subscribe { id, listener });
        } else {
            // A dead actor's successor publishes its first refresh to the hub.
            self.hub.add(id, listener);
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    fn arbiter_spawn(&self, f: Box<dyn FnOnce() + Send>) {
        self.running.read().unwrap_or_else(|p| p.into_inner()).1.spawn_fn(f);
    }

    fn wake_target(&self) -> Arc<WakeTarget> {
        Arc::clone(&self.wake)
    }
}

/// Every registered section's owner, in envelope order.
pub(super) struct Owners(pub(super) Vec<Box<dyn OwnerControl>>);

impl Owners {
    pub(super) fn iter(&self) -> impl Iterator<Item = &dyn OwnerControl> {
        self.0.iter().map(|o| &**o)
    }

    pub(super) fn get(&self, section: SectionName) -> Option<&dyn OwnerControl> {
        self.iter().find(|o| o.name() == section)
    }
}
