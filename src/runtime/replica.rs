//! A copy of a section actor's reply state that requests read without a
//! message, and how a reply (its status included) is derived from the state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::runtime::clock::Clock;
use crate::runtime::messages::SectionReply;
use crate::runtime::timing::{ActorSettings, refresh_deadline};
use crate::section::Status;

pub(crate) struct Good<D> {
    pub(crate) data: Arc<D>,
    pub(crate) at: DateTime<Utc>,
}

impl<D> Clone for Good<D> {
    fn clone(&self) -> Self {
        Self { data: Arc::clone(&self.data), at: self.at }
    }
}

/// How often an owner that is being read tells its replica it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(20);
/// The oldest heartbeat a replica trusts (at most half the snapshot timeout):
/// past it the owner may be stalled, and a request asks the owner itself.
pub(crate) const TRUSTED_HEARTBEAT_AGE: Duration = Duration::from_millis(50);
/// An owner stops its heartbeat when no request read its replica for this long.
pub(crate) const HEARTBEAT_IDLE: Duration = Duration::from_secs(5);

/// What a section's state is computed from, as its owner last published it.
pub(crate) struct ReplyState<D> {
    pub(crate) good: Option<Good<D>>,
    pub(crate) last_error: Option<String>,
    pub(crate) in_flight: Option<Instant>,
    pub(crate) seq: u64,
}

impl<D> Clone for ReplyState<D> {
    fn clone(&self) -> Self {
        Self { good: self.good.clone(), last_error: self.last_error.clone(), in_flight: self.in_flight, seq: self.seq }
    }
}

/// A copy of a section actor's reply state that requests read without
/// sending it a message, while the actor shows it is alive (README,
/// "The envelope": the statuses are computed from it exactly as the actor computes
/// them). The actor publishes to it whenever its state changes and beats a
/// heartbeat while requests read it; a request that finds the heartbeat
/// older than [`TRUSTED_HEARTBEAT_AGE`] asks the actor with a `Snapshot` and
/// the snapshot timeout instead, so a stalled actor still shows `timeout`.
pub(crate) struct Replica<D> {
    pub(crate) state: std::sync::RwLock<Option<ReplyState<D>>>,
    pub(crate) settings: ActorSettings,
    pub(crate) base: Instant,
    /// Milliseconds after `base` of the owner's last heartbeat (0: none yet).
    pub(crate) beat_ms: std::sync::atomic::AtomicU64,
    /// Milliseconds after `base` of the last read.
    pub(crate) read_ms: std::sync::atomic::AtomicU64,
}

impl<D> Replica<D> {
    /// An empty replica of an actor with `settings`.
    pub(crate) fn new(settings: ActorSettings) -> Self {
        Self {
            state: std::sync::RwLock::new(None),
            settings,
            base: Instant::now(),
            beat_ms: Default::default(),
            read_ms: Default::default(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        // Never 0, which means "never" in the beat and read marks.
        crate::source::time::ms_since(self.base).max(1)
    }

    pub(crate) fn publish(&self, state: ReplyState<D>) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }

    pub(crate) fn beat(&self) {
        self.beat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn touch(&self) {
        self.read_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds after `base` at `now` (at least 1: 0 means "never").
    pub(crate) fn ms_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX).max(1)
    }

    pub(crate) fn read_recently(&self) -> bool {
        let read = self.read_ms.load(Ordering::Relaxed);
        read != 0 && self.now_ms().saturating_sub(read) < HEARTBEAT_IDLE.as_millis() as u64
    }

    /// The section's reply at `now`, when the owner beat within `trust`;
    /// `None` means ask the owner.
    pub(crate) fn read(&self, trust: Duration, now: Clock) -> Option<SectionReply<D>> {
        let now_ms = self.ms_at(now.instant);
        // Marks it read; written only when the millisecond moved, so that
        // requests on several threads do not all write one cache line.
        if self.read_ms.load(Ordering::Relaxed) != now_ms {
            self.read_ms.store(now_ms, Ordering::Relaxed);
        }
        let beat = self.beat_ms.load(Ordering::Relaxed);
        if beat == 0 || now_ms.saturating_sub(beat) > trust.as_millis() as u64 {
            return None;
        }
        let settings = &self.settings;
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let state = state.as_ref()?;
        Some(reply_of(state.good.as_ref(), state.last_error.as_deref(), state.in_flight, settings, state.seq, now))
    }
}

/// A section's reply from its state at `now` (the actor and its replica alike).
pub(crate) fn reply_of<D>(
    good: Option<&Good<D>>,
    last_error: Option<&str>,
    in_flight: Option<Instant>,
    settings: &ActorSettings,
    seq: u64,
    now: Clock,
) -> SectionReply<D> {
    let running = |started: Instant| now.instant.saturating_duration_since(started);
    let overdue = in_flight.filter(|started| running(*started) > settings.period + refresh_deadline(settings.period));
    let problem = match (last_error, overdue) {
        (Some(e), _) => Some(e.to_owned()),
        (None, Some(started)) => Some(format!("refresh overdue: running for {} ms", running(started).as_millis())),
        (None, None) => None,
    };
    let now = now.now;
    let Some(good) = good else {
        let status = if problem.is_some() { Status::Error } else { Status::Pending };
        return SectionReply { status, data: None, refreshed_at: None, error: problem, seq };
    };
    let (status, data, error) = match problem {
        None => (Status::Ok, Some(Arc::clone(&good.data)), None),
        Some(e) => {
            let age = (now - good.at).to_std().unwrap_or_default();
            if age <= settings.max_stale {
                (Status::Stale, Some(Arc::clone(&good.data)), Some(e))
            } else {
                let e = format!(
                    "{e}; last good data is {} ms old, beyond ORCH_MAX_STALE_MS ({} ms)",
                    age.as_millis(),
                    settings.max_stale.as_millis()
                );
                (Status::Error, None, Some(e))
            }
        }
    };
    SectionReply { status, data, refreshed_at: Some(good.at), error, seq }
}
