//! What the mirror serves: the versioned envelope, the HTTP routes and the
//! Prometheus exposition. Everything here reads the runtime through
//! [`crate::MirrorHandle`] and never touches the database.

pub mod compressed;
pub mod envelope;
pub mod health;
pub mod host;
pub mod http;
mod pieces;
pub mod prometheus;
pub mod stream;
mod tls;
pub mod web_config;
