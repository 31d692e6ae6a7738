//! One loading refresh, and the reconciliation that checks the section's
//! incremental path against its full queries on the same read.

use crate::section::{Changes, LoadError, Section};
use crate::source::db::Fingerprint;

/// Whether a refresh derived everything from the database again.
pub(super) enum Rebuild {
    /// No: the section folded in what changed.
    No,
    /// Yes, because the file, connection or schema changed (or it was the first).
    Detected,
    /// Yes, because `ORCH_RECONCILE_MS` had passed; `Some` says how the
    /// incremental value differed from the full one.
    Reconciled(Option<String>),
}

/// One loading refresh: the section's incremental path (told which rows the
/// commits since the last load can have touched), or everything again
/// when the source changed under it (`seen` is the fingerprint of the last
/// load) or a reconciliation is due. A reconciliation runs both on this one
/// read snapshot and compares them.
pub(super) fn load<S: Section>(
    section: &S,
    conn: &rusqlite::Connection,
    seen: Option<Fingerprint>,
    now: Fingerprint,
    changes: &Changes,
    reconcile_due: bool,
) -> Result<(S::Data, Rebuild), LoadError> {
    if !seen.is_some_and(|s| s.same_source(&now)) {
        section.forget();
        return Ok((section.refresh(conn)?, Rebuild::Detected));
    }
    if !reconcile_due {
        return Ok((section.refresh_since(conn, changes)?, Rebuild::No));
    }
    let fast = section.refresh_since(conn, changes)?;
    section.forget();
    let full = section.refresh(conn)?;
    let drift = (fast != full).then(|| first_difference(&format!("{fast:?}"), &format!("{full:?}")));
    Ok((full, Rebuild::Reconciled(drift)))
}

/// Where two debug renderings first differ, with a little context from each.
pub(super) fn first_difference(served: &str, full: &str) -> String {
    let at = served.bytes().zip(full.bytes()).take_while(|(a, b)| a == b).count();
    let around = |s: &str| {
        let start = s.floor_char_boundary(at.saturating_sub(40));
        let end = s.ceil_char_boundary((at + 80).min(s.len()));
        s[start..end].to_owned()
    };
    format!("served …{}… but the database gives …{}…", around(served), around(full))
}
