//! The subscription hub: other actors in the process receive a section's value at
//! once, then one [`Update`] per refresh that changed it.
//!
//! Delivery never waits: `try_send` to each subscriber; a full mailbox drops
//! that update for that subscriber (counted; the gap shows in `seq`), a closed
//! one is removed. The hub outlives its actor, so a re-spawned actor keeps its
//! subscribers and its sequence numbers.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;

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

struct Entry {
    id: SubscriptionId,
    recipient: Recipient<Update>,
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

    pub(crate) fn add(&self, id: SubscriptionId, recipient: Recipient<Update>) {
        self.entries().push(Entry { id, recipient, delivered: 0, dropped: 0 });
    }

    pub(crate) fn remove(&self, id: SubscriptionId) -> bool {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|e| e.id != id);
        entries.len() != before
    }

    /// Sends `update` to every subscriber (or only `only`) without waiting.
    pub(crate) fn publish(&self, update: &Update, only: Option<SubscriptionId>) {
        let mut entries = self.entries();
        entries.retain_mut(|e| {
            if only.is_some_and(|id| id != e.id) {
                return true;
            }
            match e.recipient.try_send(update.clone()) {
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
        self.entries().retain(|e| e.recipient.connected());
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
