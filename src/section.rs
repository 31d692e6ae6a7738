//! What a section is: a name, how to load it from the database (off the actor's
//! thread), and how to render it against a response's `generated_at`.
//!
//! Adding a section means writing one file in `section/` that implements
//! [`Section`], then giving it a field in the envelope.

use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

mod agents;
mod cost;
mod queue;
mod stages;

pub use agents::{AgentEntry, Agents};
pub use cost::{Cost, CostAggregate, CostRunning, CostView};
pub use queue::{Queue, QueueCounts, QueueView, Retries};
pub use stages::{StageEntry, Stages};

/// One of the envelope's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionName {
    /// Active task stages.
    Stages,
    /// The job queue.
    Queue,
    /// Running agent processes.
    Agents,
    /// Cost and tokens.
    Cost,
}

impl SectionName {
    /// Every section, in envelope order.
    pub const ALL: [SectionName; 4] = [Self::Stages, Self::Queue, Self::Agents, Self::Cost];

    /// The section's key in the envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stages => "stages",
            Self::Queue => "queue",
            Self::Agents => "agents",
            Self::Cost => "cost",
        }
    }
}

impl fmt::Display for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a refresh produced no data.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No connection could be had (file missing, unreadable, not a database, …).
    #[error("cannot open the database: {0}")]
    Open(String),
    /// A query failed (locked database, missing table or column, interrupted, …).
    #[error("{0}")]
    Query(#[from] rusqlite::Error),
    /// Reading `/proc` failed in a way that affects the whole section.
    #[error("{0}")]
    Other(String),
}

/// A section of the envelope, owned by one [`crate::actor::SectionActor`].
pub trait Section: Send + Sync + 'static {
    /// The section's name and envelope key.
    const NAME: SectionName;
    /// What a refresh reads: raw values and parsed timestamps, no ages.
    type Data: Send + Sync + PartialEq + fmt::Debug + 'static;
    /// The section's JSON form for one response.
    type View: Serialize + Clone + Send + fmt::Debug + 'static;
    /// The SQL a refresh runs, for benchmarks and `orchmirror tune`.
    const STATEMENTS: &'static [&'static str];

    /// Reads the section from the database. Runs on a blocking thread.
    fn load(&self, conn: &Connection) -> Result<Self::Data, LoadError>;

    /// Renders `data` for a response generated at `generated_at` (ages are computed here).
    fn view(data: &Self::Data, generated_at: DateTime<Utc>) -> Self::View;

    /// Refreshes what moves without a database change (CPU ticks, the worker
    /// probe) when the database is unchanged. `None`: `data` is still current.
    fn resample(&self, data: &Self::Data) -> Option<Self::Data> {
        let _ = data;
        None
    }

    /// Wraps a rendered value for subscribers.
    fn wrap(view: Self::View) -> crate::subscribe::SectionData;
}
