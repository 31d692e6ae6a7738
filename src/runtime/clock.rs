//! The one clock reading the mirror takes for a response or a reply: the
//! monotonic instant (for durations: a refresh's running time, a heartbeat's
//! age) and the wall clock (for ages of data), read together.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::source::time::truncate_to_second;

/// The instant a response (or a section's reply) is generated.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The monotonic reading, for durations.
    pub instant: Instant,
    /// The precise wall-clock reading; `age_ms` is measured against it.
    pub now: DateTime<Utc>,
    /// `now` truncated to the second; ages in seconds are measured against it.
    pub generated_at: DateTime<Utc>,
}

impl Clock {
    /// Reads the clock.
    pub fn now() -> Self {
        Self::at(Utc::now())
    }

    /// A clock reading at `now` (the monotonic reading is taken now).
    pub fn at(now: DateTime<Utc>) -> Self {
        Self { instant: Instant::now(), now, generated_at: truncate_to_second(now) }
    }
}
