//! Values of settings that more than the loader reads: the log format, a
//! Host name, a listen address.

use std::net::{SocketAddr, ToSocketAddrs};

/// `ORCH_LOG_FORMAT`: human-readable lines, or one JSON object per line (for log shippers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `text` (the default).
    #[default]
    Text,
    /// `json`.
    Json,
}

/// Whether `name` may be listed in `ORCH_ALLOWED_HOSTS`: `*`, or a DNS name
/// (letters, digits, `-` and `.`; labels of 1 to 63; 253 at most).
pub(crate) fn valid_host_name(name: &str) -> bool {
    if name == "*" {
        return true;
    }
    let name = name.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The Unix socket's path when `bind` is `unix:/path`.
pub fn unix_socket_path(bind: &str) -> Option<&std::path::Path> {
    bind.trim().strip_prefix("unix:").map(std::path::Path::new)
}

/// Resolves a listen address (`host:port`); the error says why it is not one.
pub(crate) fn resolve_bind(raw: &str) -> Result<Vec<SocketAddr>, String> {
    let expected = "expected host:port, for example 127.0.0.1:8787 (or :8787 for every interface)";
    if raw.trim().is_empty() {
        return Err(format!("empty address; {expected}"));
    }
    // `:8787`, the Go exporters' habit: every interface.
    let raw = match raw.trim().strip_prefix(':') {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => format!("0.0.0.0:{port}"),
        _ => raw.to_owned(),
    };
    match raw.as_str().to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() { Err(format!("resolves to no address; {expected}")) } else { Ok(addrs) }
        }
        Err(e) => Err(format!("{e}; {expected}")),
    }
}
