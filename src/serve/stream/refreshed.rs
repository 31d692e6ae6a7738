//! The `refreshed` event (`?refreshed=1`): every section's `refreshed_at`
//! and `age_ms` when a refresh found nothing new, at most once per
//! [`REFRESHED_EVERY`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::time::Instant;

use super::client::Client;
use super::frame::Frame;
use super::reading::Reading;
use crate::section::SectionName;

/// The least time between two `refreshed` events.
pub(super) const REFRESHED_EVERY: Duration = Duration::from_secs(1);

/// One section in a `refreshed` event.
#[derive(Serialize)]
pub(super) struct Refreshed {
    #[serde(serialize_with = "crate::source::time::serialize_opt_millis")]
    pub(super) refreshed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(super) age_ms: Option<i64>,
}

/// A `refreshed` event's body: one key per section, in envelope order.
pub(super) struct InOrder<'a>(&'a [(SectionName, Refreshed)]);

impl Serialize for InOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, r)| (name.as_str(), r)))
    }
}

/// When the broker last sent `refreshed` events, and the refresh times they carried.
#[derive(Default)]
pub(super) struct Freshness {
    pub(super) sent_at: Option<Instant>,
    pub(super) refreshed_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
}

impl Freshness {
    /// Sends the clients that asked for it a `refreshed` event when a
    /// section's `refreshed_at` moved since the last one, at most once per
    /// [`REFRESHED_EVERY`]. A client with events still waiting skips it (the
    /// next one says the same, newer).
    pub(super) fn pass(&mut self, clients: &[Arc<Client>], reading: &Reading) {
        let now: Vec<_> = reading.sections.iter().map(|n| reading.envelope.sections[*n].refreshed_at).collect();
        if now == self.refreshed_at || self.sent_at.is_some_and(|t| t.elapsed() < REFRESHED_EVERY) {
            return;
        }
        let wanting: Vec<&Arc<Client>> = clients.iter().filter(|c| c.refreshed && c.queue().joined).collect();
        if wanting.is_empty() {
            return;
        }
        let body: Vec<(SectionName, Refreshed)> = reading
            .sections
            .iter()
            .map(|n| {
                let s = &reading.envelope.sections[*n];
                (*n, Refreshed { refreshed_at: s.refreshed_at, age_ms: s.age_ms })
            })
            .collect();
        let json = match serde_json::to_vec(&InOrder(&body)) {
            Ok(j) => j,
            Err(e) => return tracing::error!(error = %e, "cannot serialise a refreshed event"),
        };
        let frame = Frame::new("refreshed", None, vec![Bytes::from(json)]);
        for client in wanting {
            client.offer(&frame);
        }
        self.sent_at = Some(Instant::now());
        self.refreshed_at = now;
    }
}
