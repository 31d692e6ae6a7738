//! Host checking: no DNS rebinding (README, "Running beyond loopback: who may read").
//!
//! A web page on any site the browser on this host visits can point its own
//! name at 127.0.0.1 (DNS rebinding) and then read `/metrics` and the stream
//! as same-origin: its requests carry `Host: evil.example:8787`. So a request
//! whose `Host` is a name is answered only when that name is `localhost`
//! (or a name under it, which always resolves to loopback), this machine's
//! host name, or one listed in `ORCH_ALLOWED_HOSTS`; otherwise `421
//! Misdirected Request` with a JSON error. An IP literal always passes: a
//! rebinding attack needs a domain it controls, so a scraper that addresses
//! the mirror by IP needs no setting. A request without `Host` (HTTP/1.0)
//! passes too: browsers always send one.

use std::net::IpAddr;

use actix_web::dev::ServiceRequest;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, web};

/// The names a request's `Host` may carry.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// `*` was listed: every name passes (the operator checks hosts elsewhere).
    any: bool,
    /// Lower case, without a trailing dot.
    names: Vec<String>,
}

impl AllowedHosts {
    /// `localhost`, this machine's host name, and `extra` (`ORCH_ALLOWED_HOSTS`).
    pub fn new(extra: &[String]) -> Self {
        let mut names: Vec<String> = vec!["localhost".into()];
        names.extend(own_host_name());
        names.extend(extra.iter().filter(|n| *n != "*").map(|n| normalise(n)));
        names.sort();
        names.dedup();
        Self { any: extra.iter().any(|n| n == "*"), names }
    }

    /// Whether a request with this `Host` (header value or authority) may be answered.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        let name = strip_port(host.trim());
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = normalise(name);
        self.any || name.ends_with(".localhost") || self.names.contains(&name)
    }
}

/// A name as compared: lower case, without the trailing dot of a fully qualified name.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `host` without its `:port`; an IPv6 literal without its brackets.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// This machine's host name (lower case), when it can be read.
fn own_host_name() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let name = nix::unistd::gethostname().ok()?;
        let name = name.to_str()?;
        (!name.is_empty()).then(|| normalise(name))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The `421` (a JSON error) for a request whose host [`AllowedHosts`] (app
/// data) refuses; `None` when it may be answered.
pub(crate) fn refusal(req: &ServiceRequest) -> Option<HttpResponse> {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    // HTTP/2 carries the host in the request's authority instead.
    let host = host.or_else(|| req.uri().authority().map(|a| a.as_str()));
    if req.app_data::<web::Data<AllowedHosts>>().is_none_or(|a| a.allows(host)) {
        return None;
    }
    let shown: String = host.unwrap_or_default().chars().take(100).collect();
    tracing::debug!(host = %shown, "request for a host name this server does not answer to");
    let body = serde_json::json!({
        "error": format!(
            "this server does not answer to the host name {shown:?} (a defence against DNS rebinding); \
             address it by IP, as localhost, or add the name to ORCH_ALLOWED_HOSTS"
        )
    });
    Some(
        HttpResponse::build(StatusCode::MISDIRECTED_REQUEST)
            .content_type(header::ContentType::json())
            .body(body.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_localhost_and_listed_names_pass_other_names_do_not() {
        let a = AllowedHosts::new(&["Metrics.Example.org".into()]);
        for ok in [
            "127.0.0.1:8787",
            "10.1.2.3",
            "[::1]:8787",
            "[::ffff:127.0.0.1]",
            "localhost:8787",
            "LOCALHOST",
            "localhost.",
            "app.localhost:8787",
            "metrics.example.org:443",
            "metrics.example.org.",
        ] {
            assert!(a.allows(Some(ok)), "{ok}");
        }
        assert!(a.allows(None), "no Host (HTTP/1.0)");
        for refused in
            ["evil.example:8787", "evil.example", "localhost.evil.example", "example.org", "127.0.0.1.nip.io"]
        {
            assert!(!a.allows(Some(refused)), "{refused}");
        }
        assert!(AllowedHosts::new(&["*".into()]).allows(Some("evil.example")), "* lets every name pass");
    }

    #[test]
    fn this_machines_name_passes() {
        if let Some(own) = own_host_name() {
            assert!(AllowedHosts::new(&[]).allows(Some(&format!("{own}:8787"))), "{own}");
        }
    }

    #[test]
    fn only_dns_names_may_be_listed() {
        for ok in ["*", "a", "metrics.example.org", "metrics.example.org.", "x-1.y"] {
            assert!(crate::config::valid_host_name(ok), "{ok}");
        }
        for bad in ["", ".", "a..b", "-a", "a-", "a b", "a/b", "a:80", &"x".repeat(64)] {
            assert!(!crate::config::valid_host_name(bad), "{bad:?}");
        }
    }
}
