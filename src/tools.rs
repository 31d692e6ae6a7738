//! The binary's tools, behind the `tools` cargo feature (on by default, which
//! the binary requires): demo mode, the database generator and `tune`. The
//! mirror never uses them; an embedder can leave them out with
//! `default-features = false`.

pub mod demo;
pub mod generate;
pub mod orchestrator;
pub mod pattern;
pub mod tune;
