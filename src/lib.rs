//! orchmirror: a read-only mirror of an AI-agent orchestrator's SQLite state,
//! served as a versioned JSON envelope at `GET /metrics`, a stream of its
//! changes, a Prometheus exposition and a live page. README.md describes the
//! routes, the envelope, the statuses, the settings and what happens when
//! things fail; this page is the library's API.
//!
//! # Embedding
//!
//! Start here: [`MirrorHandle::start`] (or [`MirrorHandle::builder`]) inside
//! a host's actix `System`. Then read a typed snapshot
//! ([`MirrorHandle::snapshot`]), subscribe an actor to a section
//! ([`MirrorHandle::subscribe`]), and mount the routes in the host's `App`:
//! [`Routes::new`] once, then `App::new().configure(routes.config())` in
//! each worker.
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
//!
//! # Contents
//!
//! - **Starting and reading a mirror**: [`MirrorHandle`], [`MirrorBuilder`]
//!   (host sections, a worker probe), [`StartError`].
//! - **Settings**: [`Settings`] ([`Settings::load`] reads defaults, a TOML
//!   file, `ORCH_*` variables and flags), [`RefreshPeriods`], [`LogFormat`],
//!   [`CliOverrides`], [`ConfigError`]; [`config::table::SETTINGS`] lists
//!   every setting with its variable, flag, default and range.
//! - **Serving**: [`Routes`] (the routes on a host's `App`), and the
//!   standalone server: [`serve::http::listen`], [`serve::http::serve_on`],
//!   [`serve::http::server`].
//! - **What a snapshot holds**: [`Envelope`], [`SectionState`], [`Sections`],
//!   [`Status`], and each section's view in [`section`] ([`section::Stages`],
//!   [`section::Queue`], [`section::Agents`], [`section::Cost`]).
//! - **Health**: [`Health`] ([`Routes::health`]) with [`Restarts`],
//!   [`SubscriberTotals`], [`Reconciliation`], [`StreamTotals`], [`WakeMode`],
//!   per section in a [`PerSection`].
//! - **Subscriptions**: [`Update`], [`SubscriptionId`], [`SubscriptionStats`].
//! - **A host's own sections**: the [`Section`] trait, [`SectionName`],
//!   [`SectionData`], [`section::LoadError`] (`examples/custom_section/`).
//! - **A host's worker**: [`WorkerProbe`], [`ProbeResult`].
//! - **The build and the schema**: [`BUILD`], [`SCHEMA_SQL`],
//!   [`SCHEMA_INDEXES_SQL`].
//!
//! # How it is built
//!
//! Four layers, each using only the ones below it (`tests/integration/layers.rs`
//! checks that every `crate::` path points down and that the module graph has
//! no cycle): `serve` (the envelope, the stream, the routes, the exposition),
//! `runtime` (the section actors, their supervision, the handle) with
//! `config`, `section` (the `Section` trait and the four built-in sections),
//! `source` (the database, `/proc`, the clock). README's "How it works" maps
//! every file. Everything outside the list above is crate-private; the
//! integration tests and benchmarks reach internals through the `test-util`
//! feature.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Checked where the test hooks are reachable (`test-util`, which every
// `--all-targets` build has): without it their items would count as unreachable.
#![cfg_attr(feature = "test-util", warn(unreachable_pub))]

pub mod config;
pub(crate) mod runtime;
pub mod section;
pub mod serve;
pub(crate) mod source;
// The binary's tools: public for the binary, benches and examples, not part of
// the library's documented API.
#[cfg(feature = "tools")]
#[doc(hidden)]
pub mod tools;

pub use config::{CliOverrides, ConfigError, LogFormat, RefreshPeriods, Settings};
pub use runtime::builder::{MirrorBuilder, StartError};
pub use runtime::envelope::{Envelope, SectionState, Sections};
pub use runtime::handle::{BudgetState, MirrorHandle};
pub use runtime::hub::{SubscriberTotals, SubscriptionId, SubscriptionStats, Update};
pub use runtime::stats::{PerSection, Reconciliation, RefreshCounters, Restarts};
pub use section::{Section, SectionData, SectionName, Status};
pub use serve::health::Health;
pub use serve::http::Routes;
pub use serve::stream::StreamTotals;
pub use source::build::{BUILD, Build};
pub use source::commits::WakeMode;
pub use source::probe::{ProbeResult, WorkerProbe};

/// What the integration tests and benchmarks reach that is not the API:
/// internals and fault injection, behind the `test-util` feature (as tokio
/// does). Nothing here is stable.
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod test_util {
    pub use crate::runtime::actor::SectionActor;
    pub use crate::runtime::budget::Budget;
    pub use crate::runtime::clock::Clock;
    pub use crate::runtime::envelope::{assemble, json_schema};
    pub use crate::runtime::messages::{Answer, SectionReply, Snapshot};
    pub use crate::runtime::timing::ActorSettings;
    pub use crate::serve::http::{PAGE, WRITE_TIMEOUT, connections_per_worker, page_html, streams_within};
    pub use crate::serve::web_config::WebConfig;
    pub use crate::source::db::{Database, Fingerprint, MAX_SAFE_INTEGER, register_functions};
    pub use crate::source::procstat::{clk_tck, sample};
}

/// The schema of the orchestrator's database (for fixtures and demo mode; the mirror never runs it on a real database).
pub const SCHEMA_SQL: &str = include_str!("schema.sql");
/// The indexes a production orchestrator database has (fixtures may leave them out).
pub const SCHEMA_INDEXES_SQL: &str = include_str!("schema_indexes.sql");
