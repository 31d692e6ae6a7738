//! The running mirror: four section actors, each on its own arbiter, and the
//! cheap `Clone` handle through which HTTP handlers and host code read them.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actor::{ActorSettings, SectionActor};
use crate::config::Settings;
use crate::db;
use crate::envelope::{self, Clock, Envelope, Health, Replies};
use crate::messages::Snapshot;
use crate::section::{Agents, Cost, Queue, Section, SectionName, Stages};

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

struct Owner<S: Section> {
    addr: Addr<SectionActor<S>>,
    arbiter: Arbiter,
}

impl<S: Section> Owner<S> {
    fn start(section: S, pool: &db::Pool, settings: ActorSettings) -> Self {
        // Each owner gets its own arbiter (thread): actors started from the
        // System thread would otherwise share it with everything else.
        let arbiter = Arbiter::new();
        let pool = pool.clone();
        let addr = SectionActor::start_in_arbiter(&arbiter.handle(), move |_| {
            SectionActor::new(section, pool, settings)
        });
        Self { addr, arbiter }
    }

    async fn ask(
        &self,
        timeout: Duration,
    ) -> Result<crate::messages::SectionReply<S::Data>, MailboxError> {
        self.addr.send(Snapshot::new()).timeout(timeout).await
    }
}

struct Owners {
    stages: Owner<Stages>,
    queue: Owner<Queue>,
    agents: Owner<Agents>,
    cost: Owner<Cost>,
}

impl Owners {
    fn arbiter(&self, section: SectionName) -> &Arbiter {
        match section {
            SectionName::Stages => &self.stages.arbiter,
            SectionName::Queue => &self.queue.arbiter,
            SectionName::Agents => &self.agents.arbiter,
            SectionName::Cost => &self.cost.arbiter,
        }
    }
}

struct Inner {
    snapshot_timeout: Duration,
    owners: Option<Owners>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(owners) = &self.owners {
            for s in SectionName::ALL {
                owners.arbiter(s).stop();
            }
        }
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
        if !settings.metrics_enabled {
            return Ok(Self::disabled(settings));
        }
        let path = settings.db_path.as_deref().ok_or(StartError::NoDatabase)?;
        System::try_current().ok_or(StartError::NoSystem)?;
        let pool = db::open_pool(path);
        let actor = |s: SectionName| ActorSettings {
            period: settings.refresh.get(s),
            max_stale: settings.max_stale,
        };
        let owners = Owners {
            stages: Owner::start(Stages, &pool, actor(SectionName::Stages)),
            queue: Owner::start(Queue, &pool, actor(SectionName::Queue)),
            agents: Owner::start(
                Agents::new(settings.pid_start_tolerance),
                &pool,
                actor(SectionName::Agents),
            ),
            cost: Owner::start(Cost, &pool, actor(SectionName::Cost)),
        };
        tracing::info!(db = %path.display(), "mirror started");
        Ok(Self {
            inner: Arc::new(Inner {
                snapshot_timeout: settings.snapshot_timeout,
                owners: Some(owners),
            }),
        })
    }

    fn disabled(settings: &Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                snapshot_timeout: settings.snapshot_timeout,
                owners: None,
            }),
        }
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
        self.snapshot().await.map(|e| Health::of(&e))
    }

    /// Stops every section actor (their arbiters end); later snapshots say `unavailable`.
    pub fn stop(&self) {
        if let Some(owners) = &self.inner.owners {
            for s in SectionName::ALL {
                owners.arbiter(s).stop();
            }
        }
    }

    /// Fault injection for tests: stops one section's arbiter, killing its actor.
    #[doc(hidden)]
    pub fn kill_section(&self, section: SectionName) {
        if let Some(owners) = &self.inner.owners {
            owners.arbiter(section).stop();
        }
    }

    /// Fault injection for tests: blocks one section actor's thread for `dur`.
    #[doc(hidden)]
    pub fn stall_section(&self, section: SectionName, dur: Duration) {
        if let Some(owners) = &self.inner.owners {
            owners
                .arbiter(section)
                .spawn(async move { std::thread::sleep(dur) });
        }
    }
}
