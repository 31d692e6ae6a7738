//! The handlers: `/metrics` (JSON and the exposition, with tags and
//! compression), `/health`, `/readyz`, `/livez`, and the JSON 404 and 405.

use std::sync::Arc;

use actix_web::http::header::{self};
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use futures_util::future::Either;

use super::respond::*;
use crate::runtime::envelope::DISABLED_BODY;
use crate::runtime::handle::MirrorHandle;
use crate::serve::health::Health;
use crate::serve::stream::Streams;

pub(super) async fn metrics(
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

pub(super) async fn metrics_answer(
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

pub(super) async fn prometheus(
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
pub(super) fn none_match(req: &actix_web::HttpRequest, tag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim() == "*" || bare(t) == bare(tag)))
}

/// `/readyz`: `200` when every section has data (`ok` or `stale`), else
/// `503`; the body is `/health`'s. With the kill switch off, `200`.
pub(super) async fn readyz(handle: web::Data<MirrorHandle>, streams: web::Data<Arc<Streams>>) -> HttpResponse {
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

/// `/livez`: `200` while the process serves.
pub(super) async fn livez() -> HttpResponse {
    json(actix_web::http::StatusCode::OK, r#"{"status":"alive"}"#)
}

/// `/health`'s (and `/readyz`'s) body with the kill switch off, keys in the
/// documented order.
pub(crate) const DISABLED_HEALTH: &str = r#"{"status":"ok","enabled":false,"sections":{}}"#;

pub(super) fn disabled_health() -> String {
    DISABLED_HEALTH.to_owned()
}

pub(super) async fn health(handle: web::Data<MirrorHandle>, streams: web::Data<Arc<Streams>>) -> HttpResponse {
    let body = match Health::read(&handle, streams.totals()).await {
        None => disabled_health(),
        Some(h) => match serde_json::to_string(&h) {
            Ok(b) => b,
            Err(e) => serde_json::json!({ "status": "degraded", "error": e.to_string() }).to_string(),
        },
    };
    json(actix_web::http::StatusCode::OK, body)
}
