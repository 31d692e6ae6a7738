//! What the runtime counts about each section: refreshes (loaded, skipped,
//! failed), snapshot requests not answered in time, refresh durations, and
//! the per-section tables the handle reports them in.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::section::SectionName;

/// Refresh durations per section, shared by the actors (which observe) and the exposition.
pub(crate) type DurationFamily = Family<Vec<(String, String)>, Histogram, fn() -> Histogram>;

/// One section's refresh-duration histogram: 100 µs .. ~26 s, from an
/// unchanged refresh to a slow scan of a big table.
pub(crate) fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 4.0, 10))
}

pub(crate) fn duration_family() -> DurationFamily {
    Family::new_with_constructor(duration_histogram)
}

/// The `section` label of a section's series.
pub(crate) fn section_label(section: SectionName) -> Vec<(String, String)> {
    vec![("section".to_owned(), section.as_str().to_owned())]
}

/// How a section's refreshes went since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RefreshCounters {
    /// Refreshes that ran the section's queries.
    pub loaded: u64,
    /// Refreshes that found the database unchanged and skipped the queries.
    pub skipped: u64,
    /// Refreshes that failed.
    pub failed: u64,
}

/// A section's reconciliations (README, "Freshness and exactness"), for `/health`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Reconciliation {
    /// When the section last derived everything from the database (UTC).
    #[serde(serialize_with = "crate::source::time::serialize_opt_millis")]
    pub last_at: Option<DateTime<Utc>>,
    /// Reconciliations that found served values wrong (a history edit).
    pub drift: u64,
}

/// One section's refresh statistics; shared by its successive actors.
pub(crate) struct SectionStats {
    pub(crate) loaded: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Snapshot requests this section's actor did not answer in time.
    pub(crate) timeouts: AtomicU64,
    /// Refresh durations (shared with the mirror's exposition).
    pub(crate) durations: Histogram,
    /// Reconciliations whose full recomputation differed from what was served.
    pub(crate) drift: AtomicU64,
    /// When the section last derived everything from the database.
    last_reconciled: Mutex<Option<DateTime<Utc>>>,
}

impl SectionStats {
    pub(crate) fn new(durations: Histogram) -> Self {
        Self {
            loaded: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            durations,
            drift: AtomicU64::new(0),
            last_reconciled: Mutex::new(None),
        }
    }

    pub(crate) fn reconciled(&self, at: DateTime<Utc>) {
        *self.last_reconciled.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    pub(crate) fn reconciliation(&self) -> Reconciliation {
        Reconciliation {
            last_at: *self.last_reconciled.lock().unwrap_or_else(|p| p.into_inner()),
            drift: self.drift.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn counters(&self) -> RefreshCounters {
        RefreshCounters {
            loaded: self.loaded.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

impl Default for SectionStats {
    fn default() -> Self {
        Self::new(duration_histogram())
    }
}

/// One value per registered section, in envelope order; serialises as a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerSection<T>(Vec<(SectionName, T)>);

impl<T> PerSection<T> {
    pub(crate) fn new(entries: Vec<(SectionName, T)>) -> Self {
        Self(entries)
    }

    /// The value of `section`, when it is registered.
    pub fn get(&self, section: SectionName) -> Option<&T> {
        self.0.iter().find(|(n, _)| *n == section).map(|(_, v)| v)
    }

    /// Every section with its value, in envelope order.
    pub fn iter(&self) -> impl Iterator<Item = (SectionName, &T)> {
        self.0.iter().map(|(n, v)| (*n, v))
    }

    /// How many sections.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (a disabled mirror).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Default for PerSection<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> std::ops::Index<SectionName> for PerSection<T> {
    type Output = T;

    /// Panics when `section` is not registered, like a map's index.
    fn index(&self, section: SectionName) -> &T {
        match self.get(section) {
            Some(v) => v,
            None => panic!("no section named {section}"),
        }
    }
}

impl<T: Serialize> Serialize for PerSection<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, v) in &self.0 {
            map.serialize_entry(name.as_str(), v)?;
        }
        map.end()
    }
}

/// Restarts of each section's actor since start-up.
pub type Restarts = PerSection<u64>;
