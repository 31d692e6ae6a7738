//! `GET /metrics/stream`: the response, its headers and the body that
//! reads one stream's queue.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use tokio::time::Instant;

use super::broker::{Refused, Slot, Streams};
use super::client::Pop;
use super::frame::HEARTBEAT;
use crate::runtime::handle::MirrorHandle;
use crate::serve::envelope::DISABLED_BODY;
use crate::serve::pieces;

/// What a client refused for too many streams is told to wait, in seconds.
pub const RETRY_AFTER_S: u64 = 5;

/// What a stream's response body reads from.
pub(super) struct Body {
    pub(super) slot: Slot,
    pub(super) pending: VecDeque<Bytes>,
    pub(super) last_write: Instant,
}

impl Body {
    pub(super) async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Body)> {
        let client = Arc::clone(&self.slot.client);
        let heartbeat = self.slot.streams.heartbeat;
        loop {
            if let Some(b) = self.pending.pop_front() {
                self.wrote();
                return Some((Ok(b), self));
            }
            match client.pop() {
                Pop::Frame(f) => {
                    self.slot.streams.events.fetch_add(1, Ordering::Relaxed);
                    for part in &f.parts {
                        self.pending.extend(pieces::slices(part));
                    }
                    continue;
                }
                Pop::Closed => return None,
                Pop::Empty => {}
            }
            if self.last_write.elapsed() >= heartbeat {
                self.wrote();
                return Some((Ok(Bytes::from_static(HEARTBEAT)), self));
            }
            // A push between `pop` and here leaves a permit: no wake-up is
            // lost. The broker wakes the stream when its heartbeat is due
            // (it looks at least once a second while streams are open), so
            // an idle stream holds no timer of its own.
            client.notify.notified().await;
        }
    }

    fn wrote(&mut self) {
        self.last_write = Instant::now();
        self.slot.client.last_write_ms.store(self.slot.streams.now_ms(), Ordering::Relaxed);
    }
}

pub(super) fn event_stream(status: actix_web::http::StatusCode) -> actix_web::HttpResponseBuilder {
    let mut resp = HttpResponse::build(status);
    resp.content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Events must reach the client as they are written: no compression
        // (which would buffer them), no buffering in a proxy.
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .insert_header(("X-Accel-Buffering", "no"))
        // A stream ends only when the client goes or the server stops; then
        // the connection goes too, so that a stopping server does not wait on it.
        .force_close();
    resp
}

/// `GET /metrics/stream`.
pub async fn stream(
    req: HttpRequest,
    handle: web::Data<MirrorHandle>,
    streams: web::Data<Arc<Streams>>,
) -> HttpResponse {
    if !handle.enabled() {
        let body = Bytes::from(format!("event: envelope\ndata: {DISABLED_BODY}\n\n"));
        let once = futures_util::stream::once(futures_util::future::ready(Ok::<_, Infallible>(body)));
        return event_stream(actix_web::http::StatusCode::OK).streaming(once);
    }
    if req.method() == actix_web::http::Method::HEAD {
        // The headers a stream would have, and no body.
        return event_stream(actix_web::http::StatusCode::OK)
            .streaming(futures_util::stream::empty::<Result<Bytes, Infallible>>());
    }
    let unavailable = |message: String| {
        HttpResponse::ServiceUnavailable()
            .content_type(header::ContentType::json())
            .insert_header((header::RETRY_AFTER, RETRY_AFTER_S.to_string()))
            .body(serde_json::json!({ "error": message }).to_string())
    };

    let last_event_id = req.headers().get("Last-Event-ID").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Other query parameters are ignored, as on `/metrics`.
    let refreshed = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .is_ok_and(|q| q.get("refreshed").is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on")));
    let slot = match streams.open(last_event_id, refreshed) {
        Ok(slot) => slot,
        Err(Refused::Stopping) => return unavailable("the mirror is stopping".to_owned()),
        Err(Refused::Full) => {
            return unavailable(format!(
                "too many open streams (ORCH_MAX_STREAMS={}); retry after {RETRY_AFTER_S} s",
                streams.max()
            ));
        }
    };
    let body = Body { slot, pending: VecDeque::new(), last_write: Instant::now() };
    event_stream(actix_web::http::StatusCode::OK).streaming(futures_util::stream::unfold(body, Body::next))
}
