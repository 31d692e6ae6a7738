//! What the mirror serves: the versioned envelope, the HTTP routes and the
//! Prometheus exposition. Everything here reads the runtime through
//! [`crate::MirrorHandle`] and never touches the database.

pub(crate) mod compressed;
pub(crate) mod health;
pub(crate) mod host;
pub mod http;
pub(crate) mod prometheus;
mod run;
pub(crate) mod stream;
mod tls;
pub(crate) mod web_config;

pub use run::{RunError, run};
