//! Shapes of answers every handler uses: JSON bodies and errors, shared
//! bodies, GET-and-HEAD resources.

use std::convert::Infallible;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use futures_util::future::Either;

use crate::runtime::envelope::JOINED_BODY_MAX;

/// A resource answering GET and HEAD with `handler`, and other methods with a JSON 405.
pub(super) fn get_and_head<F, Args>(path: &str, handler: F) -> actix_web::Resource
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

/// No type sniffing: a browser must not guess another type from what a body
/// contains. Every answer of the routes carries it (the standalone server's
/// middleware adds it where a handler did not).
pub(super) const NO_SNIFF: (header::HeaderName, &str) = (header::X_CONTENT_TYPE_OPTIONS, "nosniff");

pub(super) fn json<B: actix_web::body::MessageBody + 'static>(
    status: actix_web::http::StatusCode,
    body: B,
) -> HttpResponse {
    HttpResponse::build(status).content_type(ContentType::json()).insert_header(NO_SNIFF).body(body)
}

/// A body from shared pieces ([`MirrorHandle::envelope_json`] has already
/// joined a small one into one buffer, sent whole); a large one is streamed
/// in 32 KiB slices of the pieces themselves (no copy of a section's
/// JSON per response), with its length announced.
pub(super) fn shared_body(
    parts: Vec<Bytes>,
) -> Either<Bytes, SizedStream<impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Unpin + use<>>> {
    if let [one] = &parts[..]
        && one.len() <= JOINED_BODY_MAX
    {
        return Either::Left(one.clone());
    }
    let len: usize = parts.iter().map(Bytes::len).sum();
    let slices = parts.into_iter().flat_map(|part| crate::runtime::pieces::slices(&part).collect::<Vec<_>>()).map(Ok);
    Either::Right(SizedStream::new(len as u64, futures_util::stream::iter(slices)))
}

pub(super) fn error(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": message }).to_string();
    json(status, body)
}

pub(super) fn accept(req: &actix_web::HttpRequest) -> &str {
    req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("")
}

pub(super) async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    let mut resp = error(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {} is not allowed on {}; use GET", req.method(), req.path()),
    );
    resp.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    resp
}

/// The JSON 404 for unknown paths (the standalone server's default service).
pub(super) async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    error(actix_web::http::StatusCode::NOT_FOUND, &format!("no such route: {}", req.path()))
}
