//! The live page at `/` and its Content-Security-Policy.

use actix_web::HttpResponse;
use actix_web::http::header::{self, ContentType};

/// The live page (`ORCH_UI_ENABLED`): one self-contained file, built in;
/// [`page_html`] is what is served (the version filled in).
pub const PAGE: &str = include_str!("../ui/index.html");

/// The page as served: [`PAGE`] with this build's version and revision in
/// its header (outside the script, whose hash the policy names).
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
pub(super) fn page_policy() -> &'static str {
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
             worker-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    })
}

/// `GET /`: the live page, which reads `/metrics/stream` (or polls `/metrics`);
/// `GET /?worker=stream`: the shared worker that holds that one stream for
/// every tab of a browser (no route of its own: the page is one route).
pub(super) async fn page(req: actix_web::HttpRequest) -> HttpResponse {
    if req.query_string().split('&').any(|pair| pair == "worker=stream") {
        return stream_worker();
    }
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(super::respond::NO_SNIFF)
        // Everything it needs is inline or on this origin; nothing else may load.
        .insert_header((header::CONTENT_SECURITY_POLICY, page_policy()))
        .body(page_html())
}

/// The page's shared worker: the one stream every tab of a browser reads
/// (a browser keeps at most six HTTP/1.1 connections to one host).
const STREAM_WORKER: &str = include_str!("../ui/stream-worker.js");

/// The page's shared worker. It may only connect to this origin (its own
/// policy governs it, not the page's).
fn stream_worker() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(super::respond::NO_SNIFF)
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'; connect-src 'self'"))
        .body(STREAM_WORKER)
}
