//! Timestamps: parsing what the orchestrator writes, formatting what we emit.
//!
//! The orchestrator writes `datetime('now')` (`YYYY-MM-DD HH:MM:SS`, UTC) and
//! real databases also hold ISO-8601 variants (`T` separator, fractional
//! seconds, `Z` or a numeric offset). Anything else is bad data for that row.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// Parses an orchestrator timestamp; `None` when it is not one of the accepted forms.
///
/// A value without an offset is UTC (that is what SQLite's `datetime('now')` writes).
/// Milliseconds from `epoch` to now on the monotonic clock (saturating).
pub(crate) fn ms_since(epoch: std::time::Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn parse_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim();
    // Cheap shape check first: every accepted form starts with a date and a time.
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(naive.and_utc());
        }
    }
    // RFC 3339 with `Z` or an offset; chrono also accepts a space separator here.
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc))
}

/// `generated_at`'s format: UTC, whole seconds, `Z`.
pub(crate) fn format_seconds(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Millisecond timestamps (`refreshed_at`, `cpu_sampled_at`): UTC, `Z`.
pub(crate) fn format_millis(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serialises an optional instant as [`format_millis`] text, or null.
pub(crate) fn serialize_opt_millis<S: serde::Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&format_millis(*at)),
        None => s.serialize_none(),
    }
}

/// How far after `generated_at` a timestamp may lie (clock skew between the
/// orchestrator and the mirror, and `generated_at`'s truncation to the second)
/// before it is bad data.
pub(crate) const FUTURE_SLACK_MS: i64 = 1000;

/// The age at `generated_at` of something that happened at `at`, in seconds
/// with millisecond precision (README, "The envelope"): never negative (a
/// timestamp up to 1 s ahead is age 0), and `None` (bad data) for one more
/// than 1 s ahead.
pub(crate) fn age_seconds(at: DateTime<Utc>, generated_at: DateTime<Utc>) -> Option<f64> {
    let ms = (generated_at - at).num_milliseconds();
    (ms >= -FUTURE_SLACK_MS).then(|| ms.max(0) as f64 / 1000.0)
}

/// [`parse_timestamp`] as milliseconds since the epoch: what the SQL function
/// `orch_epoch_ms` gives, so SQL and Rust accept exactly the same timestamps.
pub(crate) fn timestamp_millis(raw: &str) -> Option<i64> {
    parse_timestamp(raw).map(|t| t.timestamp_millis())
}

/// Truncates to whole seconds: `generated_at` and every age in a response use this instant.
pub(crate) fn truncate_to_second(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_form_the_orchestrator_writes() {
        let want = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z").map(|d| d.to_utc()).ok();
        for s in [
            "2026-11-27 10:00:00",
            "2026-11-27T10:00:00",
            "2026-11-27T10:00:00Z",
            "2026-11-27T10:00:00.000Z",
            "2026-11-27 10:00:00.000",
            "2026-11-27T12:00:00+02:00",
            " 2026-11-27 10:00:00 ",
        ] {
            assert_eq!(parse_timestamp(s), want, "{s}");
        }
        let frac = parse_timestamp("2026-11-27T10:00:00.250Z");
        assert_eq!(frac.map(|d| d.timestamp_subsec_millis()), Some(250));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "yesterday",
            "2026-11-27",
            "2026-13-40 10:00:00",
            "27/11/2026 10:00:00",
            "now",
            "2026-11-27 25:00:00",
            "2026-02-31 10:00:00",
            "2026-02-29 10:00:00",
            "2026-11-27 24:00:00",
            "2026-11-27 10:00:00 +05:00",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }

    #[test]
    fn ages_are_never_negative_and_the_future_is_bad_data() {
        let at = |s: &str| parse_timestamp(s).unwrap_or_default();
        let now = at("2026-11-27 10:00:00");
        assert_eq!(age_seconds(at("2026-11-27 09:59:17.5"), now), Some(42.5));
        assert_eq!(age_seconds(at("2026-11-27 10:00:00.999"), now), Some(0.0), "within the 1 s slack");
        assert_eq!(age_seconds(at("2026-11-27 10:00:01"), now), Some(0.0), "exactly 1 s ahead");
        assert_eq!(age_seconds(at("2026-11-27 10:00:01.001"), now), None, "more than 1 s ahead");
        assert_eq!(age_seconds(at("9999-12-31 23:59:59"), now), None, "year 9999");
    }

    #[test]
    fn formats_as_the_contract_says() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T23:29:49.1204Z").map(|d| d.to_utc());
        let at = at.ok();
        assert_eq!(at.map(format_seconds).as_deref(), Some("2026-11-27T23:29:49Z"));
        assert_eq!(at.map(format_millis).as_deref(), Some("2026-11-27T23:29:49.120Z"));
    }
}
