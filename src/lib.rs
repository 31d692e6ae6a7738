//! orchmirror: a read-only mirror of an AI-agent orchestrator's SQLite state,
//! served as a versioned JSON envelope at `GET /metrics`.
//!
//! Four actors own the `stages`, `queue`, `agents` and `cost` sections (a
//! host may register more). Each refreshes from the database on its own
//! timer, off its own thread, and answers `Snapshot` from memory; `/metrics`
//! asks every one with a timeout, so a slow or dead actor costs only its own
//! section.
//!
//! # Layout
//!
//! Four layers, each using only the ones below it (`tests/integration/layers.rs` checks
//! that every `crate::` path points down and that the module graph has no
//! cycle):
//!
//! ```text
//! serve/    envelope.rs (assembly, JSON), stream.rs (SSE broker), health.rs,
//!           http.rs (routes, server), prometheus.rs (exposition)
//!   ↓
//! runtime/  actor.rs (SectionActor<S>), mirror.rs (owners, watchdog, MirrorHandle),
//!           hub.rs (subscribers), stats.rs (refresh counters), messages.rs
//!   ↓       config.rs (Settings: defaults, file, environment, flags)
//! section/  the Section trait and SectionName (section.rs); stages, queue, agents, cost
//!   ↓
//! source/   db.rs (read-only pool), walguard.rs, procstat.rs (/proc), probe.rs (host worker), time.rs
//! ```
//!
//! `tools/` (demo mode, `generate`, `tune`) sits on top, behind the `tools`
//! cargo feature the binary requires; the mirror never uses it. A new section
//! is one file implementing [`Section`]: a built-in one is added to
//! [`section::built_in`], a host's is passed to [`MirrorBuilder::section`]
//! (see `examples/custom_section/`).
//!
//! # Embedding
//!
//! Inside a host's actix `System`: start the mirror, read a typed snapshot,
//! subscribe an actor to a section, and mount the routes in the host's `App`
//! (`Routes::new(handle.clone(), &settings)` once, then
//! `App::new().configure(routes.config())` in each worker).
//!
//! ```
//! use actix::prelude::*;
//! use orchmirror::Update;
//! use orchmirror::section::Queue;
//! use orchmirror::{MirrorHandle, SectionName, Settings, Status};
//!
//! /// Forwards queue depths to a channel.
//! struct Depths(std::sync::mpsc::Sender<(u64, u64)>);
//! impl Actor for Depths {
//!     type Context = Context<Self>;
//! }
//! impl Handler<Update> for Depths {
//!     type Result = ();
//!     fn handle(&mut self, u: Update, _: &mut Context<Self>) {
//!         if let Some(q) = u.data.get::<Queue>() {
//!             let _ = self.0.send((u.seq, q.depth));
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An orchestrator database (here a fresh one with two queued jobs).
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("orchestrator.db");
//! let db = rusqlite::Connection::open(&path)?;
//! db.execute_batch(orchmirror::SCHEMA_SQL)?;
//! db.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued'), ('dev', 'queued');")?;
//!
//! let mut settings = Settings::default();
//! settings.db_path = Some(path);
//!
//! System::new().block_on(async move {
//!     let handle = MirrorHandle::start(&settings)?;
//!
//!     // A subscriber gets the current value at once, then one update per change.
//!     let (tx, rx) = std::sync::mpsc::channel();
//!     handle.subscribe(SectionName::QUEUE, Depths(tx).start().recipient());
//!
//!     // The same envelope /metrics serves, as a typed value.
//!     let envelope = loop {
//!         let e = handle.snapshot().await.expect("the mirror is enabled");
//!         if e.sections[SectionName::QUEUE].status == Status::Ok { break e; }
//!         actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
//!     };
//!     assert_eq!(envelope.queue().map(|q| q.depth), Some(2));
//!
//!     actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
//!     assert_eq!(rx.try_recv()?, (1, 2)); // sequence 1: the first data, depth 2
//!     handle.stop();
//!     Ok(())
//! })
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod runtime;
pub mod section;
pub mod serve;
pub mod source;
// The binary's tools: public for the binary, benches and examples, not part of
// the library's documented API.
#[cfg(feature = "tools")]
#[doc(hidden)]
pub mod tools;

pub use config::{CliOverrides, ConfigError, LogFormat, RefreshPeriods, Settings};
pub use runtime::builder::{MirrorBuilder, StartError};
pub use runtime::handle::MirrorHandle;
pub use runtime::hub::{SubscriptionId, SubscriptionStats, Update};
pub use runtime::messages::{SectionReply, Snapshot};
pub use runtime::stats::{PerSection, Reconciliation, RefreshCounters, Restarts};
pub use section::{Section, SectionData, SectionName, Status};
pub use serve::envelope::{Envelope, SectionState, Sections};
pub use serve::health::Health;
pub use serve::http::Routes;
pub use serve::stream::StreamTotals;
pub use source::build::{BUILD, Build};
pub use source::probe::WorkerProbe;

/// The schema of the orchestrator's database (for fixtures and demo mode; the mirror never runs it on a real database).
pub const SCHEMA_SQL: &str = include_str!("schema.sql");
/// The indexes a production orchestrator database has (fixtures may leave them out).
pub const SCHEMA_INDEXES_SQL: &str = include_str!("schema_indexes.sql");
