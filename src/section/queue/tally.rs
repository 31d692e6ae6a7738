//! What the queue counts, and how counts add up: jobs per status, retry
//! statistics, and the tally that both the full queries and the incremental
//! state fill.

use rusqlite::types::ValueRef;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::source::db::{MAX_SAFE_INTEGER, UNDECODABLE, count, text};

/// The statuses that are always present in `counts`, in this order.
pub(super) const KNOWN_STATUSES: [&str; 5] = ["queued", "running", "done", "failed", "cancelled"];

/// A job's status as a `counts` key: one whose status cannot be named is
/// counted under [`UNDECODABLE`], so every job is counted somewhere.
pub(super) fn status_key(v: ValueRef<'_>) -> String {
    text(v).unwrap_or_else(|| UNDECODABLE.to_owned())
}

/// Jobs per status: the five known statuses first (0 when none), then any other, by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueCounts(pub Vec<(String, u64)>);

impl QueueCounts {
    /// The count for `status` (0 when absent).
    pub fn get(&self, status: &str) -> u64 {
        self.0.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n)
    }
}

impl schemars::JsonSchema for QueueCounts {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "QueueCounts".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Jobs per status: the five known statuses always, any other status found by its own name.",
            "type": "object",
            "required": KNOWN_STATUSES,
            "additionalProperties": { "type": "integer", "minimum": 0 }
        })
    }
}

impl Serialize for QueueCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (status, n) in &self.0 {
            map.serialize_entry(status, n)?;
        }
        map.end()
    }
}

/// Retry statistics over all jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Retries {
    /// Jobs with `attempts > 1`.
    pub retried_jobs: u64,
    /// Sum of `attempts − 1` over those jobs.
    pub total_retries: u64,
    /// Largest `attempts` over all jobs (0 when there are none).
    pub max_attempts: u64,
}

/// Job counts per status name and retry statistics, in integers that add up
/// the same in any order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tally {
    pub(super) counts: Vec<(String, u64)>,
    pub(super) retried_jobs: u64,
    pub(super) total_retries: u64,
    pub(super) max_attempts: u64,
}

impl Tally {
    /// `n` jobs of one status, with their attempts when valid.
    pub(super) fn add(&mut self, status: String, attempts: Option<u64>, n: u64) {
        match self.counts.iter_mut().find(|(s, _)| *s == status) {
            Some(slot) => slot.1 += n,
            None => self.counts.push((status, n)),
        }
        if let Some(a) = attempts {
            self.max_attempts = self.max_attempts.max(a);
            if a > 1 {
                self.retried_jobs += n;
                self.total_retries += (a - 1) * n;
            }
        }
    }

    pub(super) fn add_row(&mut self, row: &rusqlite::Row<'_>) -> Result<(), rusqlite::Error> {
        self.add(status_key(row.get_ref(1)?), count(row.get_ref(2)?), 1);
        Ok(())
    }

    pub(super) fn plus(mut self, other: &Tally) -> Tally {
        for (status, n) in &other.counts {
            self.add(status.clone(), None, *n);
        }
        self.retried_jobs += other.retried_jobs;
        self.total_retries += other.total_retries;
        self.max_attempts = self.max_attempts.max(other.max_attempts);
        self
    }

    /// `counts` in contract order (the five known statuses first, then others
    /// by name) and the retry statistics.
    pub(super) fn finish(&self) -> (QueueCounts, Retries) {
        let mut counts: Vec<(String, u64)> = KNOWN_STATUSES.iter().map(|s| ((*s).to_owned(), 0)).collect();
        let mut others = Vec::new();
        for (status, n) in &self.counts {
            match counts.iter_mut().find(|(s, _)| s == status) {
                Some(slot) => slot.1 += n,
                None => others.push((status.clone(), *n)),
            }
        }
        others.sort();
        counts.extend(others);
        let cap = |n: u64| n.min(MAX_SAFE_INTEGER as u64);
        let retries = Retries {
            retried_jobs: self.retried_jobs,
            total_retries: cap(self.total_retries),
            max_attempts: self.max_attempts,
        };
        (QueueCounts(counts), retries)
    }
}
