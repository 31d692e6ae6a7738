//! The running mirror: four section actors, each on its own arbiter, a
//! watchdog that re-spawns a dead one, and the cheap `Clone` handle through
//! which HTTP handlers and host code read them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use crate::actor::{ActorSettings, SectionActor};
use crate::config::Settings;
use crate::db::Database;
use crate::envelope::{self, Clock, Envelope, Health, Replies};
use crate::messages::{SectionReply, Snapshot};
use crate::section::{Agents, Cost, Queue, Section, SectionName, Stages};

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
    running: RwLock<(Addr<SectionActor<S>>, Arbiter)>,
    dead_since: Mutex<Option<Instant>>,
    restarts: AtomicU64,
}

impl<S: Section> Owner<S> {
    fn start(section: S, db: &Arc<Database>, settings: ActorSettings) -> Self {
        let section = Arc::new(section);
        let running = Self::spawn(&section, db, settings);
        Self {
            section,
            db: Arc::clone(db),
            settings,
            running: RwLock::new(running),
            dead_since: Mutex::new(None),
            restarts: AtomicU64::new(0),
        }
    }

    fn spawn(
        section: &Arc<S>,
        db: &Arc<Database>,
        settings: ActorSettings,
    ) -> (Addr<SectionActor<S>>, Arbiter) {
        // Each owner gets its own arbiter (thread): actors started from the
        // System thread would otherwise share it with everything else.
        let arbiter = Arbiter::new();
        let (section, db) = (Arc::clone(section), Arc::clone(db));
        let addr = SectionActor::start_in_arbiter(&arbiter.handle(), move |_| {
            SectionActor::new(section, db, settings)
        });
        (addr, arbiter)
    }

    fn addr(&self) -> Addr<SectionActor<S>> {
        self.running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    async fn ask(&self, timeout: Duration) -> Result<SectionReply<S::Data>, MailboxError> {
        self.addr().send(Snapshot::new()).timeout(timeout).await
    }

    fn stop(&self) {
        self.running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .stop();
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
            (Some(since), false)
                if since.elapsed() >= self.settings.period.min(MAX_RESTART_DELAY) =>
            {
                let fresh = Self::spawn(&self.section, &self.db, self.settings);
                let old = std::mem::replace(
                    &mut *self.running.write().unwrap_or_else(|p| p.into_inner()),
                    fresh,
                );
                old.1.stop();
                *dead_since = None;
                let n = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(section = %S::NAME, restarts = n, "section actor was dead; re-spawned");
            }
            (Some(_), false) => {}
        }
    }
}

struct Owners {
    stages: Owner<Stages>,
    queue: Owner<Queue>,
    agents: Owner<Agents>,
    cost: Owner<Cost>,
}

impl Owners {
    fn for_each(&self, mut f: impl FnMut(SectionName, &dyn OwnerControl)) {
        f(SectionName::Stages, &self.stages);
        f(SectionName::Queue, &self.queue);
        f(SectionName::Agents, &self.agents);
        f(SectionName::Cost, &self.cost);
    }
}

/// What the watchdog and the handle do to any owner, whatever its section.
trait OwnerControl {
    fn check(&self);
    fn stop(&self);
    fn restarts(&self) -> u64;
    fn arbiter_spawn(&self, f: Box<dyn FnOnce() + Send>);
}

impl<S: Section> OwnerControl for Owner<S> {
    fn check(&self) {
        Owner::check(self);
    }
    fn stop(&self) {
        Owner::stop(self);
    }
    fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
    fn arbiter_spawn(&self, f: Box<dyn FnOnce() + Send>) {
        self.running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .spawn_fn(f);
    }
}

struct Inner {
    snapshot_timeout: Duration,
    owners: Option<Owners>,
    stopping: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(owners) = &self.owners {
            owners.for_each(|_, o| o.stop());
        }
    }
}

/// Restarts of each section's actor since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Restarts {
    /// `stages`.
    pub stages: u64,
    /// `queue`.
    pub queue: u64,
    /// `agents`.
    pub agents: u64,
    /// `cost`.
    pub cost: u64,
}

/// A running mirror. Cloning is cheap; the actors stop when the last clone is
/// dropped or [`MirrorHandle::stop`] is called.
#[derive(Clone)]
pub struct MirrorHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MirrorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorHandle")
            .field("enabled", &self.enabled())
            .finish()
    }
}

impl MirrorHandle {
    /// Starts the mirror inside the current actix `System`. With
    /// `metrics_enabled` false nothing is started and the database is never
    /// touched; otherwise `db_path` must be set.
    pub fn start(settings: &Settings) -> Result<Self, StartError> {
        let disabled = |owners| Inner {
            snapshot_timeout: settings.snapshot_timeout,
            owners,
            stopping: AtomicBool::new(false),
        };
        if !settings.metrics_enabled {
            return Ok(Self {
                inner: Arc::new(disabled(None)),
            });
        }
        let path = settings.db_path.as_deref().ok_or(StartError::NoDatabase)?;
        System::try_current().ok_or(StartError::NoSystem)?;
        let db = Arc::new(Database::new(path));
        let actor = |s: SectionName| ActorSettings {
            period: settings.refresh.get(s),
            max_stale: settings.max_stale,
        };
        let owners = Owners {
            stages: Owner::start(Stages, &db, actor(SectionName::Stages)),
            queue: Owner::start(Queue, &db, actor(SectionName::Queue)),
            agents: Owner::start(
                Agents::new(settings.pid_start_tolerance),
                &db,
                actor(SectionName::Agents),
            ),
            cost: Owner::start(Cost, &db, actor(SectionName::Cost)),
        };
        let inner = Arc::new(disabled(Some(owners)));
        actix::spawn(watchdog(Arc::downgrade(&inner)));
        tracing::info!(db = %path.display(), "mirror started");
        Ok(Self { inner })
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
        let (stages, queue, agents, cost) = futures_util::join!(
            owners.stages.ask(t),
            owners.queue.ask(t),
            owners.agents.ask(t),
            owners.cost.ask(t)
        );
        let replies = Replies {
            stages,
            queue,
            agents,
            cost,
        };
        Some(envelope::assemble(replies, Clock::now(), t))
    }

    /// `/health`'s answer; `None` when disabled.
    pub async fn health(&self) -> Option<Health> {
        let envelope = self.snapshot().await?;
        Some(Health::of(&envelope, self.restarts()))
    }

    /// How often each section's actor was found dead and re-spawned.
    pub fn restarts(&self) -> Restarts {
        let mut r = Restarts::default();
        if let Some(owners) = &self.inner.owners {
            owners.for_each(|name, o| {
                let slot = match name {
                    SectionName::Stages => &mut r.stages,
                    SectionName::Queue => &mut r.queue,
                    SectionName::Agents => &mut r.agents,
                    SectionName::Cost => &mut r.cost,
                };
                *slot = o.restarts();
            });
        }
        r
    }

    /// Stops every section actor for good (no restarts); later snapshots say `unavailable`.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Some(owners) = &self.inner.owners {
            owners.for_each(|_, o| o.stop());
        }
    }

    fn on_section(&self, section: SectionName, f: impl FnOnce(&dyn OwnerControl)) {
        if let Some(owners) = &self.inner.owners {
            let mut f = Some(f);
            owners.for_each(|name, o| {
                if name == section
                    && let Some(f) = f.take()
                {
                    f(o);
                }
            });
        }
    }

    /// Fault injection for tests: stops one section's arbiter, killing its
    /// actor as a panic would (the watchdog re-spawns it).
    #[doc(hidden)]
    pub fn kill_section(&self, section: SectionName) {
        self.on_section(section, |o| o.stop());
    }

    /// Fault injection for tests: blocks one section actor's thread for `dur`.
    #[doc(hidden)]
    pub fn stall_section(&self, section: SectionName, dur: Duration) {
        self.on_section(section, |o| {
            o.arbiter_spawn(Box::new(move || std::thread::sleep(dur)))
        });
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
            owners.for_each(|_, o| o.check());
        }
    }
}
