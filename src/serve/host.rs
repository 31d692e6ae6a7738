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
pub(crate) struct AllowedHosts {
    /// `*` was listed: every name passes (the operator checks hosts elsewhere).
    any: bool,
    /// Lower case, without a trailing dot.
    names: Vec<String>,
}

impl AllowedHosts {
    /// `localhost`, this machine's host name, and `extra` (`ORCH_ALLOWED_HOSTS`).
    pub(crate) fn new(extra: &[String]) -> Self {
        let mut names: Vec<String> = vec!["localhost".into()];
        names.extend(own_host_name());
        names.extend(extra.iter().filter(|n| *n != "*").map(|n| normalise(n)));
        names.sort();
        names.dedup();
        Self { any: extra.iter().any(|n| n == "*"), names }
    }

    /// Whether a request with this `Host` (header value or authority) may be
    /// answered. A value that is not a well-formed host (bytes outside
    /// ASCII, characters no host name has, anything after an IPv6 literal
    /// but a port) is refused: no client that means this server sends one.
    pub(crate) fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        let Some(name) = host_of(host.trim()) else { return false };
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = normalise(name);
        self.any || name.ends_with(".localhost") || self.names.contains(&name)
    }
}

/// The host in a `Host` value or authority (`host[:port]`, `[IPv6][:port]`),
/// or `None` when it is not well formed.
fn host_of(value: &str) -> Option<&str> {
    let port_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        return ip.parse::<std::net::Ipv6Addr>().is_ok().then_some(ip);
    }
    let name = match value.rsplit_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return None,
        None => value,
    };
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_';
    (!name.is_empty() && name.bytes().all(allowed)).then_some(name)
}

/// A name as compared: lower case, without the trailing dot of a fully qualified name.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
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
    // An absolute-form request (`GET http://name/…`) names its host in its
    // target, and the `Host` header is then ignored (RFC 9112, 3.2.2); so
    // does HTTP/2, in its authority. Otherwise the `Host` header, whose
    // bytes outside ASCII make it no host at all (refused, not taken as absent).
    let header = req.headers().get(header::HOST).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let host = req.uri().authority().map(|a| a.as_str()).or(header);
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
        for refused in [
            "evil.example:8787",
            "evil.example",
            "localhost.evil.example",
            "example.org",
            "127.0.0.1.nip.io",
            "[::1]evil.com",
            "[::1]:80evil",
            "evil.com#.localhost",
            "evil.com/.localhost",
            "evil.com?.localhost",
            "evil.com:x",
            "\u{fffd}",
            "",
        ] {
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
