//! The web configuration file (`ORCH_WEB_CONFIG_FILE`, `--web.config.file`):
//! the Prometheus exporter-toolkit's format and meaning, so the files and
//! scrape configs operators already have work here too.
//!
//! Supported: `tls_server_config` (see `tls.rs`: certificates, mutual TLS,
//! versions), `basic_auth_users` (user → bcrypt hash; every route requires
//! one of them, `/livez` only with `authenticate_livez: true`, this server's
//! one addition, since liveness probes often cannot authenticate) and
//! `http_server_config.headers` (added to every answer) and
//! `http_server_config.http2` (whether TLS connections may speak HTTP/2;
//! default true). Not supported, and so a start-up error naming the key
//! rather than silently ignored: `rate_limit`.
//!
//! The file is looked at again at most once a second while requests come:
//! a changed file that is valid replaces the users and headers at once (a
//! rotation needs no restart); one that is not keeps the last good one,
//! logs why once per change and counts it
//! (`orchmirror_web_config_reload_failures_total`,
//! `orchmirror_web_config_last_reload_successful`).
//!
//! A wrong or missing password gets `401` with `WWW-Authenticate` and a JSON
//! body. Checking costs one bcrypt verification, whose comparison is constant
//! time; an unknown user is checked against a hash of the users' highest
//! cost (made again with every reload), so
//! the answer's timing does not tell which users exist. Credentials that
//! verified are remembered (as a SHA-256 digest with the stored hash, never
//! the password) so a scraper's every request does not pay bcrypt again.
//! Failures are counted (`orchmirror_http_auth_failures_total`) and logged
//! once per client address and minute, never with the password.
//!
//! Checks are bounded: costs above [`MAX_BCRYPT_COST`] are refused at load;
//! at most one check per core runs at once, and a request that finds them
//! all busy is answered `429` at once; an address past [`FREE_FAILURES`]
//! failures within [`STRIKE_WINDOW`] waits, doubling up to [`MAX_BACKOFF`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, web};

use crate::serve::tls::{Tls, TlsSource};

mod counters;
mod dummy;
mod format;
mod load;

use counters::{AUTH_FAILURES, AUTH_THROTTLED, LAST_RELOAD_OK, RELOAD_FAILURES};
pub(crate) use counters::{auth_failures, auth_throttled, last_reload_successful, reload_failures};

/// The largest web configuration file read (it holds a few users and paths).
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// How often the file is looked at again while requests come.
pub(crate) const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// The response headers `http_server_config.headers` may set (the toolkit's list).
const HEADERS: [&str; 5] = [
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
];
/// The realm in `WWW-Authenticate`.
const REALM: &str = "orchmirror";

/// The highest bcrypt cost a user's hash may have: each step doubles the work,
/// and cost 14 already takes over a second of a core per check.
pub(crate) const MAX_BCRYPT_COST: u32 = 14;

/// After this many failed password checks from one address within
/// [`STRIKE_WINDOW`], its next check waits (1 s, doubling per further failure, at most [`MAX_BACKOFF`]).
pub(crate) const FREE_FAILURES: u32 = 5;
/// How long failures from one address are remembered.
pub(crate) const STRIKE_WINDOW: Duration = Duration::from_secs(60);
/// The longest an address is made to wait between checks.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A valid web configuration.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// User → bcrypt hash; empty: no authentication.
    users: BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    authenticate_livez: bool,
    /// `tls_server_config`, loaded.
    tls: Option<Arc<Tls>>,
    /// `http_server_config.http2` as given: whether TLS connections may speak
    /// HTTP/2 (from start-up; unset: yes, as in the exporter-toolkit).
    http2: Option<bool>,
    /// What an unknown user is checked against: a hash of the highest cost
    /// among the users, so that a check costs the same whoever is named.
    dummy: String,
}

impl WebConfig {
    /// Whether TLS connections may speak HTTP/2 (`http_server_config.http2`, default true).
    pub(crate) fn http2(&self) -> bool {
        self.http2.unwrap_or(true)
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Whether the file asks for TLS.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl WebConfig {
    /// What this configuration protects the server with, a few words each
    /// (for the start-up line): TLS and how it treats client certificates,
    /// basic auth and its number of users.
    pub(crate) fn protection(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(tls) = &self.tls {
            out.push(
                if tls.verifier.client_auth_mandatory() {
                    "TLS with client certificates required (mTLS)"
                } else if tls.verifier.offer_client_auth() {
                    "TLS, client certificates verified when given"
                } else {
                    "TLS"
                }
                .to_owned(),
            );
        }
        match self.users.len() {
            0 => {}
            1 => out.push("basic auth (1 user)".to_owned()),
            n => out.push(format!("basic auth ({n} users)")),
        }
        out
    }

    /// Whether a client must prove who it is: a user, or a verified client certificate.
    pub(crate) fn authenticates(&self) -> bool {
        !self.users.is_empty() || self.tls.as_ref().is_some_and(|t| t.verifier.client_auth_mandatory())
    }
}

/// What identifies a version of the file and the files it names: each one's
/// length and modification time.
type Stamp = Vec<Option<(u64, SystemTime)>>;

fn stamp(path: &Path, config: &WebConfig) -> Stamp {
    std::iter::once(path)
        .chain(config.tls.iter().flat_map(|t| t.files.iter().map(PathBuf::as_path)))
        .map(|p| std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH))))
        .collect()
}

/// The web configuration in force, re-read when its file changes.
#[derive(Debug)]
pub(crate) struct WebAuth {
    path: PathBuf,
    current: RwLock<Arc<WebConfig>>,
    /// When the file was last looked at, and the version then seen.
    looked: Mutex<(Instant, Stamp)>,
    /// Digests of credentials that verified, with the hash they verified against.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// When each client's failure was last logged.
    logged: Mutex<HashMap<IpAddr, Instant>>,
    /// Recent failed checks per client address (see [`FREE_FAILURES`]).
    strikes: Mutex<HashMap<IpAddr, Strikes>>,
    /// One permit per password check that may run at once (about one per core).
    slots: Arc<tokio::sync::Semaphore>,
}

/// One address's recent failed checks.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    last: Instant,
}

impl Strikes {
    /// How long the address must still wait before its next check, if at all.
    fn wait(&self) -> Option<Duration> {
        if self.count < FREE_FAILURES || self.last.elapsed() >= STRIKE_WINDOW {
            return None;
        }
        let backoff = Duration::from_secs(1 << (self.count - FREE_FAILURES).min(6)).min(MAX_BACKOFF);
        backoff.checked_sub(self.last.elapsed()).filter(|w| !w.is_zero())
    }
}

/// How many password checks may run at once: one per core.
fn verify_slots() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

impl WebAuth {
    /// Loads `path` (at start-up: an invalid file is an error).
    pub(crate) fn start(path: &Path) -> Result<WebAuth, String> {
        let config = WebConfig::load(path)?;
        Ok(WebAuth {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(config.clone())),
            looked: Mutex::new((Instant::now(), stamp(path, &config))),
            verified: Mutex::new(HashSet::new()),
            logged: Mutex::new(HashMap::new()),
            strikes: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(verify_slots())),
        })
    }

    /// The configuration in force, after looking at the file again when due.
    pub(crate) fn config(&self) -> Arc<WebConfig> {
        let changed = {
            let mut looked = self.looked.lock().unwrap_or_else(|p| p.into_inner());
            if looked.0.elapsed() < RELOAD_CHECK {
                false
            } else {
                let current = Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()));
                let now = stamp(&self.path, &current);
                looked.0 = Instant::now();
                std::mem::replace(&mut looked.1, now.clone()) != now
            }
        };
        if changed {
            self.reload();
        }
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn reload(&self) {
        let before = Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()));
        let loaded = WebConfig::load(&self.path).and_then(|config| match (&before.tls, &config.tls) {
            (Some(_), None) => Err("turning TLS off needs a restart".to_owned()),
            (None, Some(_)) => Err("turning TLS on needs a restart".to_owned()),
            (Some(a), Some(b)) if a.versions != b.versions => {
                Err("a change of min_version or max_version needs a restart".to_owned())
            }
            _ if before.http2() != config.http2() => {
                Err("a change of http_server_config.http2 needs a restart".to_owned())
            }
            _ => Ok(config),
        });
        match loaded {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                self.verified.lock().unwrap_or_else(|p| p.into_inner()).clear();
                LAST_RELOAD_OK.store(true, Ordering::Relaxed);
                tracing::info!(file = %self.path.display(), "web configuration reloaded");
            }
            Err(e) => {
                RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
                LAST_RELOAD_OK.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, "the changed web configuration is not valid; keeping the last good one");
            }
        }
    }

    /// What `authorization` (the header's value) claims: the user, the
    /// password, and the digest under which a verification is remembered.
    fn claim(config: &WebConfig, authorization: Option<&str>) -> Option<Claim> {
        use base64::Engine;
        // The scheme is case-insensitive (RFC 9110, 11.1): `BASIC` is `Basic`.
        let decoded = authorization
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, credentials)| credentials)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())?;
        let (user, password) = decoded.split_once(':')?;
        let hash = config.users.get(user).cloned();
        let digest = {
            use sha2::Digest;
            let mut d = sha2::Sha256::new();
            for part in [user, "\0", password, "\0", hash.as_deref().unwrap_or("")] {
                d.update(part.as_bytes());
            }
            <[u8; 32]>::from(d.finalize())
        };
        Some(Claim { password: password.to_owned(), hash, digest })
    }

    /// Whether the claim verified before (cheap; no bcrypt).
    fn remembered(&self, claim: &Claim) -> bool {
        claim.hash.is_some() && self.verified.lock().unwrap_or_else(|p| p.into_inner()).contains(&claim.digest)
    }

    /// Verifies the claim with bcrypt (milliseconds: call it off the HTTP
    /// worker), remembering success.
    fn verify(&self, config: &WebConfig, claim: &Claim) -> bool {
        let Some(hash) = &claim.hash else {
            // The same work as for a known user: timing does not tell who exists.
            let _ = bcrypt::verify(&claim.password, &config.dummy);
            return false;
        };
        let digest = claim.digest;
        let ok = bcrypt::verify(&claim.password, hash).unwrap_or(false);
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= 1024 {
                verified.clear();
            }
            verified.insert(digest);
        }
        ok
    }

    /// How long `client` must wait before its password is checked again.
    fn backoff(&self, client: Option<IpAddr>) -> Option<Duration> {
        let ip = client?;
        self.strikes.lock().unwrap_or_else(|p| p.into_inner()).get(&ip).and_then(Strikes::wait)
    }

    /// Forgets `client`'s failures after a check succeeded.
    fn succeeded(&self, client: Option<IpAddr>) {
        if let Some(ip) = client {
            self.strikes.lock().unwrap_or_else(|p| p.into_inner()).remove(&ip);
        }
    }

    /// Counts a failure, and logs it once per client and minute.
    fn failed(&self, client: Option<IpAddr>, path: &str, user_given: bool) {
        AUTH_FAILURES.fetch_add(1, Ordering::Relaxed);
        let Some(ip) = client else { return };
        if user_given {
            let mut strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
            if strikes.len() >= 10_000 {
                strikes.retain(|_, s| s.last.elapsed() < STRIKE_WINDOW);
            }
            let s = strikes.entry(ip).or_insert(Strikes { count: 0, last: Instant::now() });
            if s.last.elapsed() >= STRIKE_WINDOW {
                s.count = 0;
            }
            s.count = s.count.saturating_add(1);
            s.last = Instant::now();
        }
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.get(&ip).is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
            return;
        }
        if logged.len() >= 10_000 {
            logged.retain(|_, at| at.elapsed() < Duration::from_secs(60));
        }
        logged.insert(ip, Instant::now());
        tracing::warn!(client = %ip, path, credentials = user_given, "authentication failed (logged once per client and minute)");
    }
}

impl TlsSource for WebAuth {
    fn tls(&self) -> Option<Arc<Tls>> {
        self.config().tls.clone()
    }
}

impl WebAuth {
    /// The rustls configuration when the file asks for TLS.
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<Option<rustls::ServerConfig>, String> {
        let config = Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()));
        let Some(tls) = &config.tls else { return Ok(None) };
        let source: Arc<dyn TlsSource> = Arc::clone(self) as Arc<dyn TlsSource>;
        crate::serve::tls::server_config(source, tls, config.http2()).map(Some)
    }
}

/// What a request's `Authorization` claims.
struct Claim {
    password: String,
    /// The claimed user's stored hash; `None` for an unknown user.
    hash: Option<String>,
    digest: [u8; 32],
}

/// With a web configuration (`auth`'s `config`): the `401` for a request
/// without one of its users (every route; `/livez` only when it says so);
/// `None` when it may be answered.
pub(crate) async fn refusal(
    req: &ServiceRequest,
    auth: &web::Data<WebAuth>,
    config: &WebConfig,
) -> Option<HttpResponse> {
    let exempt = req.path() == "/livez" && !config.authenticate_livez;
    if exempt || config.users.is_empty() {
        return None;
    }
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let client = req.peer_addr().map(|a| a.ip());
    let ok = match WebAuth::claim(config, authorization) {
        None => false,
        Some(claim) if auth.remembered(&claim) => true,
        Some(claim) => {
            // A client that failed often lately waits; so does everyone while
            // every core is checking a password: answered at once, never queued.
            if let Some(wait) = auth.backoff(client) {
                return Some(throttled(wait, "too many failed password checks from this address"));
            }
            let Ok(permit) = Arc::clone(&auth.slots).try_acquire_owned() else {
                return Some(throttled(Duration::from_secs(1), "too many password checks at once"));
            };
            let (auth, config) = (auth.clone(), config.clone());
            // bcrypt takes milliseconds: off the HTTP worker's thread.
            web::block(move || {
                let _permit = permit;
                auth.verify(&config, &claim)
            })
            .await
            .unwrap_or(false)
        }
    };
    if ok {
        auth.succeeded(client);
    }
    if ok {
        return None;
    }
    auth.failed(client, req.path(), authorization.is_some());
    let body = serde_json::json!({
        "error": if authorization.is_some() { "wrong user or password" } else { "authentication required" }
    });
    Some(
        HttpResponse::Unauthorized()
            .content_type(header::ContentType::json())
            .insert_header((header::WWW_AUTHENTICATE, format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"")))
            .body(body.to_string()),
    )
}

/// The `429` for a request whose password is not checked now, with when to try again.
fn throttled(wait: Duration, why: &str) -> HttpResponse {
    AUTH_THROTTLED.fetch_add(1, Ordering::Relaxed);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HttpResponse::TooManyRequests()
        .content_type(header::ContentType::json())
        .insert_header((header::RETRY_AFTER, seconds.max(1).to_string()))
        .body(serde_json::json!({ "error": format!("{why}; retry after {} s", seconds.max(1)) }).to_string())
}

/// Sets the configuration's `http_server_config.headers` on an answer.
pub(crate) fn add_headers(config: &WebConfig, headers: &mut actix_web::http::header::HeaderMap) {
    for (name, value) in &config.headers {
        headers.insert(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests;
