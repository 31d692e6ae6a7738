//! The one middleware layer every answer passes through, and what counts
//! answers in flight for a graceful stop.

use std::sync::Arc;

use actix_web::http::header::{self};
use actix_web::web;
use bytes::Bytes;

use super::respond::*;

/// Answers other than streams whose body is not yet all handed to the
/// connection: a stopping server waits for them, then closes every
/// connection at once (a stream reader that stopped reading would otherwise
/// hold a graceful stop for its whole timeout).
#[derive(Clone, Default)]
pub(super) struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

/// Held by one answer's body; the answer is done when it is dropped.
pub(super) struct Flying(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn start(&self) -> Flying {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Flying(Arc::clone(&self.0))
    }

    pub(super) fn count(&self) -> usize {
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
pub(super) struct Counted {
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
pub(super) async fn guard(
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
    for (name, value) in [NO_SNIFF, (header::REFERRER_POLICY, "no-referrer")] {
        if !headers.contains_key(&name) {
            headers.insert(name, header::HeaderValue::from_static(value));
        }
    }
    Ok(res.map_body(|_, body| Counted { body, _flying: flying }))
}

/// Compression answers `406` in plain text when Accept-Encoding refuses
/// every encoding; this server's errors are JSON.
pub(super) fn json_not_acceptable<B: actix_web::body::MessageBody + 'static>(
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
