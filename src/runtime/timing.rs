//! How long a section's refresh may take and how often it runs: the
//! settings every section actor (and its replica) is given.

use std::sync::Arc;
use std::time::Duration;

/// The longest a single refresh may run before its statement is interrupted.
pub(crate) const MAX_REFRESH_TIME: Duration = Duration::from_secs(60);
/// The shortest such bound, so a short period does not starve a slow database.
pub(crate) const MIN_REFRESH_TIME: Duration = Duration::from_secs(5);

/// How long one refresh may take: twice the period, within
/// [`MIN_REFRESH_TIME`] ..= [`MAX_REFRESH_TIME`]. A refresh still running
/// after its period plus this bound makes the section `stale`.
pub(crate) fn refresh_deadline(period: Duration) -> Duration {
    (period * 2).clamp(MIN_REFRESH_TIME, MAX_REFRESH_TIME)
}

/// Timing and staleness parameters of one section actor.
#[derive(Debug, Clone)]
pub struct ActorSettings {
    /// Time between the end of one refresh and the start of the next.
    pub period: Duration,
    /// How old last-good data may be and still be served.
    pub max_stale: Duration,
    /// The longest the section goes without deriving everything from the
    /// database again (`ORCH_RECONCILE_MS`).
    pub reconcile: Duration,
    /// The shortest time between the starts of two refreshes that commits
    /// woke (`ORCH_COALESCE_MS`).
    pub coalesce: Duration,
    /// The mirror's CPU budget, shared with its other sections: while it is
    /// overdrawn a woken refresh waits (at most `period`).
    pub budget: Arc<crate::runtime::budget::Budget>,
}
