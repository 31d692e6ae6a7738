//! What the web configuration counts, for `/health` and the exposition:
//! refused and throttled requests, failed reloads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Requests answered `429` without a password check: too many checks at
/// once, or an address that failed too often lately.
pub(super) static AUTH_THROTTLED: AtomicU64 = AtomicU64::new(0);

/// How many requests were answered `429` instead of checked.
pub(crate) fn auth_throttled() -> u64 {
    AUTH_THROTTLED.load(Ordering::Relaxed)
}

pub(super) static AUTH_FAILURES: AtomicU64 = AtomicU64::new(0);
pub(super) static RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);
pub(super) static LAST_RELOAD_OK: AtomicBool = AtomicBool::new(true);

/// Requests refused for a missing or wrong password, since start-up.
pub(crate) fn auth_failures() -> u64 {
    AUTH_FAILURES.load(Ordering::Relaxed)
}

/// Reloads of a changed web configuration file that failed (the last good one stayed).
pub(crate) fn reload_failures() -> u64 {
    RELOAD_FAILURES.load(Ordering::Relaxed)
}

/// Whether the latest look at the web configuration file found it valid.
pub(crate) fn last_reload_successful() -> bool {
    LAST_RELOAD_OK.load(Ordering::Relaxed)
}
