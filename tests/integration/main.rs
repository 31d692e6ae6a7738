//! The integration tests: one binary, one module per area, the shared harness
//! in `support/`. One binary links the crate and its dev-dependencies once
//! (26 binaries each linked them: most of `cargo test`'s cold time).
//!
//! Run one area with `cargo test --test integration stream::`, one test by
//! its name as usual.

mod support;

mod actor;
mod agents_proc;
mod auth_flood;
mod bad_rows;
mod budget;
mod change_detection;
mod changes;
#[cfg(target_os = "linux")]
mod commit_wake;
mod config;
mod custom_section;
mod demo;
mod deploy;
mod envelope;
mod faults;
mod http;
mod http2;
mod http_abuse;
mod incremental;
mod layers;
mod pairing;
mod prometheus;
mod reconcile;
mod replace;
mod schema;
mod serving;
mod soak;
mod stream;
mod subscribe;
mod tls;
mod tune;
mod ui;
mod unix_socket;
mod vendor;
mod wal_ownership;
mod wal_readonly;
mod web_config;
mod writer_cost;
