//! orchmirror: a read-only mirror of an AI-agent orchestrator's SQLite state,
//! served as a versioned JSON envelope at `GET /metrics`.
//!
//! Four actors own the `stages`, `queue`, `agents` and `cost` sections. Each
//! refreshes from the database on its own timer, off its own thread, and
//! answers `Snapshot` from memory; `/metrics` asks all four with a timeout, so a
//! slow or dead actor costs only its own section.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod actor;
pub mod config;
pub mod db;
pub mod demo;
pub mod envelope;
pub mod http;
pub mod messages;
pub mod mirror;
pub mod procstat;
pub mod section;
pub mod time;

pub use config::{CliOverrides, ConfigError, RefreshPeriods, Settings};
pub use envelope::{Envelope, Health, SectionState, Sections};
pub use messages::{SectionReply, Snapshot, Status};
pub use mirror::{MirrorHandle, StartError};
pub use section::{Section, SectionName};

/// The schema of the orchestrator's database (for fixtures and demo mode; the mirror never runs it on a real database).
pub const SCHEMA_SQL: &str = include_str!("schema.sql");
/// The indexes a production orchestrator database has (fixtures may leave them out).
pub const SCHEMA_INDEXES_SQL: &str = include_str!("schema_indexes.sql");
