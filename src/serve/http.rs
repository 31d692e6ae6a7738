//! The HTTP surface: `/metrics`, `/health`, JSON 404/405, and the standalone server.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::convert::Infallible;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, ContentType};
use actix_web::{App, HttpResponse, HttpServer, dev::Server, web};
use bytes::Bytes;
use futures_util::future::Either;

use crate::config::{Settings, resolve_bind};
use crate::runtime::handle::MirrorHandle;
use crate::serve::envelope::{DISABLED_BODY, JOINED_BODY_MAX};
use crate::serve::health::Health;
use crate::serve::stream::Streams;
use std::sync::Arc;

/// How long a client may take to send its request head.
pub(crate) const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle keep-alive connection stays open: short, so that idle
/// connections give their slot back before they can crowd out new clients.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The most connections per worker, whatever the file limit allows
/// (actix-web's own default).
pub(crate) const MAX_CONNECTIONS_PER_WORKER: usize = 25_000;
/// File descriptors kept out of the connection cap for the mirror's own use:
/// each section's database connection (and its `-wal`/`-shm`), the WAL guard's
/// descriptors, `/proc` reads, the listeners, logs and the runtime. A flood
/// of clients can then never make a database open or a `/proc` read fail.
pub(crate) const FD_RESERVE: usize = 128;

/// Concurrent connections per worker: what the soft limit on open files
/// leaves after [`FD_RESERVE`], shared among `workers`, at most
/// [`MAX_CONNECTIONS_PER_WORKER`]. Past it, new connections wait in the
/// listen backlog instead of failing with EMFILE.
#[doc(hidden)]
pub fn connections_per_worker(open_files_limit: u64, workers: usize) -> usize {
    let usable = usize::try_from(open_files_limit).unwrap_or(usize::MAX).saturating_sub(FD_RESERVE);
    (usable / workers.max(1)).clamp(1, MAX_CONNECTIONS_PER_WORKER)
}

/// The process's soft limit on open files (1,024 when it cannot be read).
fn open_files_limit() -> u64 {
    rlimit::Resource::NOFILE.get().map_or(1024, |(soft, _)| soft)
}

/// The standalone server's workers: one per core.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The whole server's connection cap: [`connections_per_worker`] for every worker.
fn connection_cap() -> usize {
    let workers = workers();
    connections_per_worker(open_files_limit(), workers).saturating_mul(workers)
}
/// How long data the server has sent may stay unacknowledged, including a
/// client that keeps its receive window shut (stops reading), before the
/// kernel drops the connection (`TCP_USER_TIMEOUT`): the write timeout.
#[doc(hidden)]
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets up each accepted connection: no Nagle delay (a response written in
/// pieces, a compressed body or a stream's events, would otherwise wait up
/// to 40 ms for the client's delayed ACK before its last piece goes out),
/// and the write timeout (Linux; elsewhere the connection only ends when the
/// client goes).
fn on_connect(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    // Plain TCP, or the TCP under TLS (a Unix socket has neither setting).
    let tcp = conn
        .downcast_ref::<actix_web::rt::net::TcpStream>()
        .or_else(|| conn.downcast_ref::<Tls>().map(|t| t.get_ref().0));
    let Some(tcp) = tcp else {
        return;
    };
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(WRITE_TIMEOUT)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT on a connection");
    }
}

/// The share of the connection cap kept from streams for the other routes
/// (`/metrics`, `/health`, the probes), and its least size: streams that took
/// every connection would starve a liveness probe into restarting a healthy mirror.
pub(crate) const STREAM_RESERVE: (usize, usize) = (4, 16);

/// How many streams `connections` (the whole server's cap) leaves room for:
/// all but a quarter of them, and never the last [`STREAM_RESERVE`]`.1`.
#[doc(hidden)]
pub fn streams_within(connections: usize) -> usize {
    let reserve = (connections / STREAM_RESERVE.0).max(STREAM_RESERVE.1).min(connections);
    connections - reserve
}

/// How long a graceful shutdown waits for in-flight requests.
pub(crate) const SHUTDOWN_TIMEOUT_S: u64 = 2;

/// Answers other than streams whose body is not yet all handed to the
/// connection: a stopping server waits for them, then closes every
/// connection at once (a stream reader that stopped reading would otherwise
/// hold a graceful stop for its whole timeout).
#[derive(Clone, Default)]
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

/// Held by one answer's body; the answer is done when it is dropped.
struct Flying(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn start(&self) -> Flying {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Flying(Arc::clone(&self.0))
    }

    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Flying {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A body that counts as in flight until it is dropped (all sent, or the
/// connection gone), when it counts at all.
struct Counted {
    body: actix_web::body::BoxBody,
    _flying: Option<Flying>,
}

impl actix_web::body::MessageBody for Counted {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_next(cx)
    }
}

/// The one middleware every answer passes through, outside compression:
/// it counts the answer in flight until its body is dropped (a stream's is
/// not counted), answers `421` for a host name it does not answer to
/// ([`crate::serve::host`]), requires a user of the web configuration when
/// there is one ([`crate::serve::web_config`]), turns compression's
/// plain-text `406` into JSON, and sets the headers every answer carries.
/// One layer instead of one per concern: each `from_fn` layer cost every
/// request a boxed future and a pass through its service (five layers took
/// a tenth of `/metrics`' throughput; BENCHMARKS.md).
async fn guard(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<Counted>, actix_web::Error> {
    let flying = req.app_data::<web::Data<InFlight>>().filter(|_| req.path() != "/metrics/stream").map(|f| f.start());
    let auth = req.app_data::<web::Data<crate::serve::web_config::WebAuth>>().cloned();
    let mut res = if let Some(refused) = crate::serve::host::refusal(&req) {
        req.into_response(refused)
    } else {
        let config = auth.as_ref().map(|a| (a, a.config()));
        let refused = match &config {
            Some((auth, config)) => crate::serve::web_config::refusal(&req, auth, config).await,
            None => None,
        };
        let mut res = match refused {
            Some(refused) => req.into_response(refused),
            None => json_not_acceptable(next.call(req).await?),
        };
        if let Some((_, config)) = &config {
            crate::serve::web_config::add_headers(config, res.headers_mut());
        }
        res
    };
    // No type sniffing, and no URL of this server in other sites' Referer
    // (unless the answer or the web configuration set them already).
    let headers = res.headers_mut();
    for (name, value) in [(header::X_CONTENT_TYPE_OPTIONS, "nosniff"), (header::REFERRER_POLICY, "no-referrer")] {
        if !headers.contains_key(&name) {
            headers.insert(name, header::HeaderValue::from_static(value));
        }
    }
    Ok(res.map_body(|_, body| Counted { body, _flying: flying }))
}

/// Compression answers `406` in plain text when Accept-Encoding refuses
/// every encoding; this server's errors are JSON.
fn json_not_acceptable<B: actix_web::body::MessageBody + 'static>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::dev::ServiceResponse {
    let json = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if res.status() != actix_web::http::StatusCode::NOT_ACCEPTABLE || json {
        return res.map_into_boxed_body();
    }
    let (req, _) = res.into_parts();
    let answer = error(
        actix_web::http::StatusCode::NOT_ACCEPTABLE,
        "no acceptable content encoding: Accept-Encoding refuses identity and every encoding this server has \
         (gzip, br, zstd)",
    );
    actix_web::dev::ServiceResponse::new(req, answer)
}

/// The mirror's routes, with the serving settings (`ORCH_UI_ENABLED`,
/// `ORCH_MAX_STREAMS`, `ORCH_STREAM_HEARTBEAT_MS`) and the state every
/// worker shares (the streams): `/metrics`, `/metrics/stream`,
/// `/metrics/prometheus`, `/health`, `/readyz`, `/livez`, and the live page
/// at `/` unless `ORCH_UI_ENABLED` is false. Make it once, outside the
/// server's per-worker factory, and register it on each worker's `App` (or
/// `Scope`) with [`Routes::config`].
///
/// ```no_run
/// # fn demo(handle: orchmirror::MirrorHandle, settings: &orchmirror::Settings) {
/// let routes = orchmirror::Routes::new(handle, settings);
/// let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.config()));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Routes {
    handle: MirrorHandle,
    ui_enabled: bool,
    streams: Arc<Streams>,
}

impl Routes {
    /// The routes of `handle`'s mirror, with `settings`' serving settings.
    pub fn new(handle: MirrorHandle, settings: &Settings) -> Self {
        let max = settings.max_streams.unwrap_or_else(|| streams_within(connection_cap()));
        let streams = Streams::new(&handle, max, settings.stream_heartbeat);
        Routes { handle, ui_enabled: settings.ui_enabled, streams }
    }

    /// Registers the routes on an `App` or a `Scope`.
    pub fn config(&self) -> impl FnOnce(&mut web::ServiceConfig) + use<> {
        self.some(Which::All)
    }

    /// Registers `which` routes (the standalone server registers the stream
    /// outside compression: its events must not be buffered, and compression
    /// would only add a layer to every event).
    fn some(&self, which: Which) -> impl FnOnce(&mut web::ServiceConfig) + use<> {
        let routes = self.clone();
        move |cfg| {
            cfg.app_data(web::Data::new(routes.handle.clone())).app_data(web::Data::new(Arc::clone(&routes.streams)));
            if which != Which::AllButStream {
                cfg.service(get_and_head("/metrics/stream", crate::serve::stream::stream));
            }
            if which == Which::Stream {
                return;
            }
            if routes.ui_enabled {
                cfg.service(get_and_head("/", page));
            }
            cfg.service(get_and_head("/metrics", metrics))
                .service(get_and_head("/health", health))
                .service(get_and_head("/readyz", readyz))
                .service(get_and_head("/livez", livez))
                .service(get_and_head("/metrics/prometheus", prometheus));
        }
    }

    /// `/health`'s answer; `None` when the mirror is disabled.
    pub async fn health(&self) -> Option<Health> {
        Health::read(&self.handle, self.streams.totals()).await
    }

    /// The mirror these routes serve.
    pub fn handle(&self) -> &MirrorHandle {
        &self.handle
    }
}

/// Which of the routes [`Routes::some`] registers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    All,
    Stream,
    AllButStream,
}

/// A resource answering GET and HEAD with `handler`, and other methods with a JSON 405.
fn get_and_head<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_not_allowed))
}

fn json<B: actix_web::body::MessageBody + 'static>(status: actix_web::http::StatusCode, body: B) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(ContentType::json())
        // A browser must not guess another type from what the data contains.
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// A body from shared pieces ([`MirrorHandle::envelope_json`] has already
/// joined a small one into one buffer, sent whole); a large one is streamed
/// in 32 KiB slices of the pieces themselves (no copy of a section's
/// JSON per response), with its length announced.
fn shared_body(
    parts: Vec<Bytes>,
) -> Either<Bytes, SizedStream<impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Unpin + use<>>> {
    if let [one] = &parts[..]
        && one.len() <= JOINED_BODY_MAX
    {
        return Either::Left(one.clone());
    }
    let len: usize = parts.iter().map(Bytes::len).sum();
    let slices = parts.into_iter().flat_map(|part| crate::serve::pieces::slices(&part).collect::<Vec<_>>()).map(Ok);
    Either::Right(SizedStream::new(len as u64, futures_util::stream::iter(slices)))
}

fn error(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": message }).to_string();
    json(status, body)
}

fn accept(req: &actix_web::HttpRequest) -> &str {
    req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn metrics(
    req: actix_web::HttpRequest,
    handle: web::Data<MirrorHandle>,
    streams: web::Data<Arc<Streams>>,
) -> HttpResponse {
    let mut resp = metrics_answer(req, handle, streams).await;
    // The answer depends on both (JSON or an exposition; compressed or not):
    // a shared cache must not hand one client's form to another.
    resp.headers_mut().insert(header::VARY, header::HeaderValue::from_static("Accept, Accept-Encoding"));
    resp
}

async fn metrics_answer(
    req: actix_web::HttpRequest,
    handle: web::Data<MirrorHandle>,
    streams: web::Data<Arc<Streams>>,
) -> HttpResponse {
    // A stock Prometheus scrape config asks for its text formats; everyone else gets JSON.
    if crate::serve::prometheus::wants_exposition(accept(&req)) {
        return prometheus(req, handle, streams).await;
    }
    match handle.envelope_json_tagged().await {
        None => json(actix_web::http::StatusCode::OK, DISABLED_BODY),
        Some(body) => match body {
            Ok((_, tag)) if none_match(&req, &tag) => {
                HttpResponse::NotModified().insert_header((header::ETAG, tag)).finish()
            }
            Ok((parts, tag)) => {
                let len: usize = parts.iter().map(Bytes::len).sum();
                let coding = req
                    .headers()
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::serve::compressed::Coding::negotiate);
                if let Some(coding) = coding.filter(|_| len >= crate::serve::compressed::MIN_SHARED) {
                    match crate::serve::compressed::body(coding, &tag, parts.clone()).await {
                        Ok(compressed) => {
                            let mut resp = match shared_body(vec![compressed]) {
                                Either::Left(small) => json(actix_web::http::StatusCode::OK, small),
                                Either::Right(large) => json(actix_web::http::StatusCode::OK, large),
                            };
                            // Already encoded: `Compress` leaves an answer with this header alone.
                            resp.headers_mut()
                                .insert(header::CONTENT_ENCODING, header::HeaderValue::from_static(coding.token()));
                            if let Ok(value) = header::HeaderValue::from_str(&tag) {
                                resp.headers_mut().insert(header::ETAG, value);
                            }
                            return resp;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot compress /metrics; answering uncompressed"),
                    }
                }
                let mut resp = match shared_body(parts) {
                    Either::Left(small) => json(actix_web::http::StatusCode::OK, small),
                    Either::Right(large) => json(actix_web::http::StatusCode::OK, large),
                };
                if let Ok(value) = header::HeaderValue::from_str(&tag) {
                    resp.headers_mut().insert(header::ETAG, value);
                }
                resp
            }
            // Serialising plain data cannot fail; if it ever does, the client still gets JSON.
            Err(e) => error(actix_web::http::StatusCode::OK, &format!("cannot serialise the envelope: {e}")),
        },
    }
}

async fn prometheus(
    req: actix_web::HttpRequest,
    handle: web::Data<MirrorHandle>,
    streams: web::Data<Arc<Streams>>,
) -> HttpResponse {
    let format = crate::serve::prometheus::Format::from_accept(accept(&req));
    match crate::serve::prometheus::render(&handle, streams.totals(), format).await {
        Ok(body) => HttpResponse::Ok().content_type(format.content_type()).body(body),
        // Encoding into a String cannot fail; if it ever does, say so without a 5xx.
        Err(e) => error(actix_web::http::StatusCode::OK, &format!("cannot encode the exposition: {e}")),
    }
}

/// Whether the request's `If-None-Match` names `tag` (weak comparison, or `*`).
fn none_match(req: &actix_web::HttpRequest, tag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim() == "*" || bare(t) == bare(tag)))
}

/// `/readyz`: `200` when every section has data (`ok` or `stale`), else
/// `503`; the body is `/health`'s. With the kill switch off, `200`.
async fn readyz(handle: web::Data<MirrorHandle>, streams: web::Data<Arc<Streams>>) -> HttpResponse {
    match Health::read(&handle, streams.totals()).await {
        None => json(actix_web::http::StatusCode::OK, disabled_health()),
        Some(h) => {
            let ready = h.sections.iter().all(|(_, s)| s.status.has_data());
            let status =
                if ready { actix_web::http::StatusCode::OK } else { actix_web::http::StatusCode::SERVICE_UNAVAILABLE };
            match serde_json::to_string(&h) {
                Ok(body) => json(status, body),
                Err(e) => error(status, &format!("cannot serialise /health: {e}")),
            }
        }
    }
}

/// The live page (`ORCH_UI_ENABLED`): one self-contained file, built in;
/// [`page_html`] is what is served (the version filled in).
#[doc(hidden)]
pub const PAGE: &str = include_str!("ui/index.html");

/// The page as served: [`PAGE`] with this build's version and revision in
/// its header (outside the script, whose hash the policy names).
#[doc(hidden)]
pub fn page_html() -> &'static str {
    static HTML: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HTML.get_or_init(|| {
        let version = format!("{} ({})", crate::source::build::BUILD.version, crate::source::build::BUILD.revision);
        let escaped: String = version.chars().filter(|c| c.is_ascii_alphanumeric() || " .()-+_".contains(*c)).collect();
        PAGE.replace("__ORCHMIRROR_VERSION__", &escaped)
    })
}

/// The page's Content-Security-Policy: its one inline script is allowed by
/// its SHA-256 (it is static), not by `'unsafe-inline'`, so no injected
/// script could run; everything else it needs is inline style or this origin.
fn page_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let script = PAGE
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(script, _)| script);
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script.as_bytes()));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    })
}

/// `GET /`: the live page, which reads `/metrics/stream` (or polls `/metrics`).
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Everything it needs is inline or on this origin; nothing else may load.
        .insert_header((header::CONTENT_SECURITY_POLICY, page_policy()))
        .body(page_html())
}

/// `/livez`: `200` while the process serves.
async fn livez() -> HttpResponse {
    json(actix_web::http::StatusCode::OK, r#"{"status":"alive"}"#)
}

/// `/health`'s (and `/readyz`'s) body with the kill switch off, keys in the
/// documented order.
pub(crate) const DISABLED_HEALTH: &str = r#"{"status":"ok","enabled":false,"sections":{}}"#;

fn disabled_health() -> String {
    DISABLED_HEALTH.to_owned()
}

async fn health(handle: web::Data<MirrorHandle>, streams: web::Data<Arc<Streams>>) -> HttpResponse {
    let body = match Health::read(&handle, streams.totals()).await {
        None => disabled_health(),
        Some(h) => match serde_json::to_string(&h) {
            Ok(b) => b,
            Err(e) => serde_json::json!({ "status": "degraded", "error": e.to_string() }).to_string(),
        },
    };
    json(actix_web::http::StatusCode::OK, body)
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    let mut resp = error(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {} is not allowed on {}; use GET", req.method(), req.path()),
    );
    resp.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    resp
}

/// The JSON 404 for unknown paths (the standalone server's default service).
pub(crate) async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    error(actix_web::http::StatusCode::NOT_FOUND, &format!("no such route: {}", req.path()))
}

/// The listen backlog (actix-web's default): connections past the cap wait here.
pub(crate) const BACKLOG: i32 = 2048;

/// Binds `settings.bind` (every address it resolves to). Done before anything
/// else starts, so that a port in use is a start-up error, not a mirror that
/// started and then could not serve. A non-loopback address is logged as a
/// warning: the orchestrator's state is served without authentication.
pub fn listen(settings: &Settings) -> io::Result<Vec<Listener>> {
    if let Some(path) = crate::config::unix_socket_path(&settings.bind) {
        return Ok(vec![listen_unix(path, settings)?]);
    }
    let addrs = resolve_bind(&settings.bind)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("ORCH_BIND={:?}: {e}", settings.bind)))?;
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into()).map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))?;
        socket.listen(BACKLOG)?;
        // An IPv4-mapped IPv6 loopback (`[::ffff:127.0.0.1]`) is loopback too.
        if !addr.ip().to_canonical().is_loopback() {
            tracing::warn!(
                %addr,
                "listening beyond loopback: anyone who can reach this address reads the orchestrator's state \
                 (no authentication); put it behind a proxy or a firewall"
            );
        }
        listeners.push(Listener::Tcp(socket.into()));
    }
    Ok(listeners)
}

/// A bound listener: TCP, or the Unix socket of `ORCH_BIND=unix:/path`.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A Unix socket listener and its path (removed when the server stops).
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
}

/// Binds the Unix socket at `path`: a stale socket file (a run that did not
/// exit cleanly) is replaced, a socket a live server answers on is an error,
/// and anything else at the path is left alone (an error). The socket is
/// created owner-only, then given `ORCH_SOCKET_GROUP` and `ORCH_SOCKET_MODE`,
/// so nobody else can connect in between.
fn listen_unix(path: &std::path::Path, settings: &Settings) -> io::Result<Listener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{shown}: a running server answers on this socket"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %shown, "replacing the stale socket of a run that did not exit cleanly");
                std::fs::remove_file(path)?;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{shown}: cannot tell whether the socket is in use: {e}"),
                ));
            }
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{shown} exists and is not a socket; it is left alone"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{shown}: {e}"))),
    }
    let listener = owner_only(|| std::os::unix::net::UnixListener::bind(path))
        .map_err(|e| io::Error::new(e.kind(), format!("{shown}: {e}")))?;
    if let Some(group) = &settings.socket_group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| io::Error::new(e.kind(), format!("{shown}: cannot give it group {group}: {e}")))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.socket_mode))?;
    Ok(Listener::Unix(listener, path.to_path_buf()))
}

/// Runs `f` with the file-creation mask at owner-only (start-up, before the
/// mirror's threads create files), then restores it.
fn owner_only<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::stat::{Mode, umask};
        let old = umask(Mode::from_bits_truncate(0o177));
        let out = f();
        umask(old);
        out
    }
    #[cfg(not(target_os = "linux"))]
    f()
}

/// The gid of `group` (a name or a number), or an error naming `ORCH_SOCKET_GROUP`.
fn group_id(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let unknown = || io::Error::new(io::ErrorKind::NotFound, format!("ORCH_SOCKET_GROUP={group:?}: no such group"));
    #[cfg(target_os = "linux")]
    {
        nix::unistd::Group::from_name(group).ok().flatten().map(|g| g.gid.as_raw()).ok_or_else(unknown)
    }
    #[cfg(not(target_os = "linux"))]
    Err(unknown())
}

/// Reads and checks a web configuration file (`ORCH_WEB_CONFIG_FILE`), as
/// the server does when it starts: the error says what is wrong with it.
pub fn check_web_config(path: &std::path::Path) -> Result<(), String> {
    crate::serve::web_config::WebConfig::load(path).map(|_| ())
}

/// Binds the standalone server on `settings.bind` with explicit limits (see
/// [`listen`] and [`serve_on`]); it stops when `shutdown` completes.
pub fn server(
    settings: &Settings,
    handle: MirrorHandle,
    shutdown: impl Future<Output = ()> + 'static,
) -> io::Result<(Server, Vec<SocketAddr>)> {
    serve_on(listen(settings)?, handle, settings, shutdown)
}

/// The standalone server on bound listeners, with explicit limits. The
/// returned server (run it by awaiting it) stops gracefully when `shutdown`
/// completes: open streams end, answers in flight finish (within the
/// graceful-stop bound), then every connection closes. The library takes
/// no signal of the process; the binary passes one that completes on
/// SIGTERM, SIGINT or SIGHUP, a host application whatever stops it
/// (`std::future::pending()` for never: the returned [`Server`]'s handle
/// still stops it). The addresses are where it listens (useful with port 0).
pub fn serve_on(
    listeners: Vec<Listener>,
    handle: MirrorHandle,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + 'static,
) -> io::Result<(Server, Vec<SocketAddr>)> {
    let workers = workers();
    let per_worker = connections_per_worker(open_files_limit(), workers);
    let for_streams = streams_within(per_worker.saturating_mul(workers));
    let routes = Routes::new(handle, settings);
    tracing::info!(
        workers,
        connections_per_worker = per_worker,
        max_streams = routes.streams.max().min(for_streams),
        max_streams_from = if settings.max_streams.is_some() { "ORCH_MAX_STREAMS" } else { "the open-files limit" },
        "connection cap and stream cap sized to the open-files limit"
    );
    if routes.streams.max() > for_streams {
        tracing::warn!(
            configured = routes.streams.max(),
            effective = for_streams,
            "ORCH_MAX_STREAMS is above what the connection cap leaves after its reserve for /metrics, /health \
             and the probes; streams are capped lower (raise the open-files limit for more)"
        );
        routes.streams.cap(for_streams);
    }
    let streams = Arc::clone(&routes.streams);
    let in_flight = web::Data::new(InFlight::default());
    let flying = in_flight.clone();
    let hosts = web::Data::new(crate::serve::host::AllowedHosts::new(&settings.allowed_hosts));
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, format!("ORCH_WEB_CONFIG_FILE: {e}"));
    let web_auth = match &settings.web_config_file {
        Some(path) => Some(web::Data::new(crate::serve::web_config::WebAuth::start(path).map_err(invalid)?)),
        None => None,
    };
    let tls = match &web_auth {
        Some(auth) => auth.clone().into_inner().server_config().map_err(invalid)?,
        None => None,
    };
    let mut server = HttpServer::new(move || {
        let app = App::new()
            // Everything every answer needs (outermost).
            .wrap(actix_web::middleware::from_fn(guard))
            .app_data(hosts.clone())
            .app_data(in_flight.clone());
        let app = match &web_auth {
            Some(auth) => app.app_data(auth.clone()),
            None => app,
        };
        app.configure(routes.some(Which::Stream))
            .service(
                web::scope("")
                    // gzip, br or zstd when the client's Accept-Encoding asks for it.
                    .wrap(actix_web::middleware::Compress::default())
                    .configure(routes.some(Which::AllButStream)),
            )
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .on_connect(on_connect)
    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(KEEP_ALIVE)
    // A client's EOF means it is gone (as hyper, Go and uvicorn take it):
    // without this, a stream whose client left would hold its slot until a
    // heartbeat failed to write (actix-web issue 1313). A client that
    // half-closes before its answer gets none; HTTP clients do not do that.
    .h1_allow_half_closed(false)
    .max_connections(per_worker)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_S)
    // The process's signals are the binary's; `shutdown` stops it (below):
    // open streams must end before a graceful stop can finish.
    .disable_signals();
    for listener in listeners {
        server = match listener {
            Listener::Tcp(l) => match &tls {
                Some(config) => server.listen_rustls_0_23(l, config.clone())?,
                None => server.listen(l)?,
            },
            Listener::Unix(l, path) => {
                tracing::info!(path = %path.display(), "listening on a Unix socket");
                server.listen_uds(l)?
            }
        };
    }
    let addrs = server.addrs();
    for addr in &addrs {
        tracing::info!(%addr, "listening");
    }
    let server = server.run();
    let stopper = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: ending open streams, finishing requests in flight");
        streams.stop();
        // In-flight answers finish (at most the graceful timeout); then every
        // connection closes, a stream's whose reader stopped reading included.
        let deadline = std::time::Instant::now() + Duration::from_secs(SHUTDOWN_TIMEOUT_S);
        while flying.count() > 0 && std::time::Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        stopper.stop(false).await;
    });
    Ok((server, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_leave_a_quarter_of_the_connections_and_at_least_sixteen() {
        assert_eq!(super::streams_within(172), 129);
        assert_eq!(super::streams_within(40), 24);
        assert_eq!(super::streams_within(10), 0);
        assert_eq!(super::streams_within(50_000), 37_500);
    }

    #[test]
    fn the_connection_cap_leaves_the_reserve_free() {
        assert_eq!(connections_per_worker(1024, 2), (1024 - FD_RESERVE) / 2);
        assert!(connections_per_worker(1024, 2) * 2 + FD_RESERVE <= 1024);
        assert_eq!(connections_per_worker(u64::MAX, 2), MAX_CONNECTIONS_PER_WORKER);
        assert_eq!(connections_per_worker(10, 4), 1, "never zero");
    }
}
