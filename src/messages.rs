//! Messages the section actors answer.

use std::marker::PhantomData;
use std::sync::Arc;

use actix::Message;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A section's state as the envelope reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The latest refresh succeeded and the next one is not overdue.
    Ok,
    /// The latest refresh failed or is overdue; last good data (younger than `ORCH_MAX_STALE_MS`) is served.
    Stale,
    /// No refresh has finished yet.
    Pending,
    /// No usable data.
    Error,
    /// The section's actor did not answer within `ORCH_SNAPSHOT_TIMEOUT_MS`.
    Timeout,
    /// The section's actor is stopped or dead.
    Unavailable,
}

impl Status {
    /// Whether the section carries data in this state (`ok` and `stale`).
    pub fn has_data(self) -> bool {
        matches!(self, Status::Ok | Status::Stale)
    }
}

/// Ask a section actor for its current state; answered from memory at once.
pub struct Snapshot<D>(PhantomData<fn() -> D>);

impl<D> Snapshot<D> {
    /// A new request.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<D> Default for Snapshot<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: 'static> Message for Snapshot<D> {
    type Result = SectionReply<D>;
}

/// A section actor's answer to [`Snapshot`].
#[derive(Debug)]
pub struct SectionReply<D> {
    /// `ok`, `stale`, `pending` or `error` (the actor never says `timeout` or `unavailable`).
    pub status: Status,
    /// The data served: present exactly when `status` is `ok` or `stale`.
    pub data: Option<Arc<D>>,
    /// The last successful refresh.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Why the section is not `ok`.
    pub error: Option<String>,
    /// Increments each time a refresh changed the data.
    pub seq: u64,
}

impl<D> SectionReply<D> {
    /// An `ok` reply carrying `data` refreshed at `refreshed_at`.
    pub fn ok(data: Arc<D>, refreshed_at: DateTime<Utc>, seq: u64) -> Self {
        Self { status: Status::Ok, data: Some(data), refreshed_at: Some(refreshed_at), error: None, seq }
    }
}

impl<D> Clone for SectionReply<D> {
    fn clone(&self) -> Self {
        Self {
            status: self.status,
            data: self.data.clone(),
            refreshed_at: self.refreshed_at,
            error: self.error.clone(),
            seq: self.seq,
        }
    }
}

/// Adds a subscriber to a section actor, which sends it the current value at once.
pub(crate) struct Subscribe {
    pub(crate) id: crate::subscribe::SubscriptionId,
    pub(crate) recipient: actix::Recipient<crate::subscribe::Update>,
}

impl Message for Subscribe {
    type Result = ();
}
