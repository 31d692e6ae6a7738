//! The subscription hub: other actors in the process receive a section's value at
//! once, then one [`Update`] per refresh that changed it.
//!
//! A subscriber is another actor (a [`Recipient<Update>`], which gets the
//! section's rendered value) or, inside the crate, a plain change notice (a
//! [`Notify`], which the stream's broker waits on before it reads what it
//! needs itself): the value is rendered only when some actor receives it.
//!
//! Delivery never waits: `try_send` to each subscriber; a full mailbox drops
//! that update for that subscriber (counted; the gap shows in `seq`), a closed
//! one is removed. The hub outlives its actor, so a re-spawned actor keeps its
//! subscribers and its sequence numbers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;

use tokio::sync::Notify;

use crate::section::{SectionData, SectionName};

/// A section's new value. Ages inside `data` are relative to `refreshed_at`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct Update {
    /// Which section.
    pub section: SectionName,
    /// Per-section sequence number: +1 for each change; a gap means updates were dropped.
    pub seq: u64,
    /// When the data was read.
    pub refreshed_at: DateTime<Utc>,
    /// The section's value.
    pub data: SectionData,
}

/// Identifies one subscription (one recipient on one section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SubscriptionId(pub(crate) u64);

/// Delivery counters of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// The subscription.
    pub id: SubscriptionId,
    /// Its section.
    pub section: SectionName,
    /// Updates handed to its mailbox.
    pub delivered: u64,
    /// Updates dropped because its mailbox was full.
    pub dropped: u64,
}

/// Per-section subscriber totals (for `/health`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SubscriberTotals {
    /// Live subscriptions.
    pub subscribers: u64,
    /// Updates dropped for full mailboxes, over all subscriptions ever.
    pub dropped: u64,
}

/// Who hears of a section's changes.
pub(crate) enum Listener {
    /// An actor, sent each new value.
    Actor(Recipient<Update>),
    /// A change notice only (the value is not rendered for it); the
    /// subscription ends when the [`Notify`] is dropped.
    Notice(Weak<Notify>),
}

impl Listener {
    fn connected(&self) -> bool {
        match self {
            Listener::Actor(r) => r.connected(),
            Listener::Notice(n) => n.strong_count() > 0,
        }
    }
}

struct Entry {
    id: SubscriptionId,
    listener: Listener,
    delivered: u64,
    dropped: u64,
}

/// A section's sequence counter and subscribers; shared by its successive actors.
pub(crate) struct Hub {
    section: SectionName,
    seq: AtomicU64,
    entries: Mutex<Vec<Entry>>,
    dropped_total: AtomicU64,
}

impl Hub {
    pub(crate) fn new(section: SectionName) -> Self {
        Self { section, seq: AtomicU64::new(0), entries: Mutex::new(Vec::new()), dropped_total: AtomicU64::new(0) }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sequence number of the current data.
    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Counts a change; returns its sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn has_subscribers(&self) -> bool {
        !self.entries().is_empty()
    }

    pub(crate) fn add(&self, id: SubscriptionId, listener: Listener) {
        self.entries().push(Entry { id, listener, delivered: 0, dropped: 0 });
    }

    pub(crate) fn remove(&self, id: SubscriptionId) -> bool {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|e| e.id != id);
        entries.len() != before
    }

    /// Tells every subscriber (or only `only`) of the value `seq` read at
    /// `refreshed_at`, without waiting: actors get it rendered by `render`
    /// (called once, and only when an actor listens), notices a wake-up.
    pub(crate) fn publish(
        &self,
        seq: u64,
        refreshed_at: DateTime<Utc>,
        render: impl FnOnce() -> SectionData,
        only: Option<SubscriptionId>,
    ) {
        let mut entries = self.entries();
        let mut render = Some(render);
        let mut update: Option<Update> = None;
        entries.retain_mut(|e| {
            if only.is_some_and(|id| id != e.id) {
                return true;
            }
            let recipient = match &e.listener {
                Listener::Notice(notify) => {
                    let Some(notify) = notify.upgrade() else { return false };
                    notify.notify_one();
                    e.delivered += 1;
                    return true;
                }
                Listener::Actor(recipient) => recipient,
            };
            if update.is_none() {
                update = render.take().map(|r| Update { section: self.section, seq, refreshed_at, data: r() });
            }
            let Some(update) = &update else { return true };
            match recipient.try_send(update.clone()) {
                Ok(()) => {
                    e.delivered += 1;
                    true
                }
                Err(SendError::Full(_)) => {
                    e.dropped += 1;
                    self.dropped_total.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(SendError::Closed(_)) => {
                    tracing::debug!(section = %self.section, id = e.id.0, "subscriber gone; removed");
                    false
                }
            }
        });
    }

    /// Removes subscribers whose mailbox is closed (a stopped actor).
    pub(crate) fn prune(&self) {
        self.entries().retain(|e| e.listener.connected());
    }

    pub(crate) fn stats(&self) -> Vec<SubscriptionStats> {
        self.entries()
            .iter()
            .map(|e| SubscriptionStats { id: e.id, section: self.section, delivered: e.delivered, dropped: e.dropped })
            .collect()
    }

    pub(crate) fn totals(&self) -> SubscriberTotals {
        SubscriberTotals {
            subscribers: self.entries().len() as u64,
            dropped: self.dropped_total.load(Ordering::Relaxed),
        }
    }
}
