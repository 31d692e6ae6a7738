//! Messages the section actors answer.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use actix::{MailboxError, Message};
use chrono::{DateTime, Utc};

use crate::runtime::rendered::RenderCache;
use crate::section::{Section, SectionData, SectionName, Status};

/// The database changed (a commit, as the watch on its files saw it): look
/// again as soon as the section's coalescing gap allows. The flag is the
/// sender's "a wake-up is on its way", cleared when it is handled, so that a
/// burst of commits queues one message, not one per commit.
pub struct Wake(pub(crate) Arc<std::sync::atomic::AtomicBool>);

impl Message for Wake {
    type Result = ();
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
pub struct SectionReply<D: ?Sized> {
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
    #[cfg(any(test, feature = "test-util"))]
    pub fn ok(data: Arc<D>, refreshed_at: DateTime<Utc>, seq: u64) -> Self {
        Self { status: Status::Ok, data: Some(data), refreshed_at: Some(refreshed_at), error: None, seq }
    }
}

impl<D: ?Sized> Clone for SectionReply<D> {
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
    pub(crate) id: crate::runtime::hub::SubscriptionId,
    pub(crate) listener: crate::runtime::hub::Listener,
}

impl Message for Subscribe {
    type Result = ();
}

/// A section actor's answer (or the mailbox error in its place) with the
/// section's data type erased: what one response is assembled from, whatever
/// sections are registered.
#[derive(Debug)]
pub struct Answer {
    /// Which section answered.
    pub section: SectionName,
    /// The reply, or why there was none (`Timeout`, `Closed`).
    pub reply: Result<SectionReply<dyn Any + Send + Sync>, MailboxError>,
    render: fn(&(dyn Any + Send + Sync), DateTime<Utc>) -> Option<SectionData>,
}

impl Answer {
    /// The section's status in a response: its own, or `timeout` /
    /// `unavailable` when its actor did not answer.
    pub fn status(&self) -> Status {
        match &self.reply {
            Ok(r) => r.status,
            Err(MailboxError::Timeout) => Status::Timeout,
            Err(MailboxError::Closed) => Status::Unavailable,
        }
    }

    /// `S`'s reply, erased.
    pub fn of<S: Section>(reply: Result<SectionReply<S::Data>, MailboxError>) -> Self {
        let reply = reply.map(|r| SectionReply {
            status: r.status,
            data: r.data.map(|d| d as Arc<dyn Any + Send + Sync>),
            refreshed_at: r.refreshed_at,
            error: r.error,
            seq: r.seq,
        });
        let render = |data: &(dyn Any + Send + Sync), at| {
            data.downcast_ref::<S::Data>().map(|d| SectionData::render::<S>(d, at))
        };
        Self { section: S::NAME, reply, render }
    }

    /// The section's data as its actor answered it; `None` without data.
    pub fn data(&self) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.reply.as_ref().ok()?.data.as_ref()
    }

    /// The section's value for a response generated at `generated_at`; `None` without data.
    pub fn render(&self, generated_at: DateTime<Utc>) -> Option<SectionData> {
        let data = self.reply.as_ref().ok()?.data.as_deref()?;
        (self.render)(data, generated_at)
    }

    /// [`Answer::render`] through `cache`: the same data at the same second is rendered once.
    pub fn render_cached(&self, generated_at: DateTime<Utc>, cache: &RenderCache) -> Option<SectionData> {
        let data = self.data()?;
        cache.get_or_render(self.section, data, None, generated_at, || self.render(generated_at))
    }
}
