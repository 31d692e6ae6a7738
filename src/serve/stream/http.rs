//! `GET /metrics/stream`: the response, its headers and the body that
//! reads one stream's queue.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;

use super::broker::{Form, Refused, Slot, Streams};
use super::client::Pop;
use super::frame::{Frame, HEARTBEAT};
use crate::runtime::envelope::DISABLED_BODY;
use crate::runtime::handle::MirrorHandle;
use crate::runtime::pieces;

/// What a client refused for too many streams is told to wait, in seconds.
pub(super) const RETRY_AFTER_S: u64 = 5;

/// A stream's response body: the events its broker hands it, each written
/// as the shared bytes of its frame (no copy), and a heartbeat when it has
/// written nothing for a while. Polled by its connection directly: no
/// future is made per event, and waking it is one atomic swap.
pub(super) struct Body {
    pub(super) slot: Slot,
    /// The frame being written, its part and the offset in that part.
    current: Option<(Arc<Frame>, usize, usize)>,
    /// It wrote since it last waited: no heartbeat is due.
    wrote_since_wait: bool,
}

impl Body {
    pub(super) fn new(slot: Slot) -> Self {
        Body { slot, current: None, wrote_since_wait: false }
    }

    /// The next slice (at most [`pieces::CHUNK`] bytes) of the frame being written.
    fn next_piece(&mut self) -> Option<Bytes> {
        let (frame, part, at) = self.current.as_mut()?;
        while let Some(bytes) = frame.parts.get(*part) {
            if *at < bytes.len() {
                let end = (*at + pieces::CHUNK).min(bytes.len());
                let piece = bytes.slice(*at..end);
                *at = end;
                return Some(piece);
            }
            (*part, *at) = (*part + 1, 0);
        }
        self.current = None;
        None
    }

    fn wrote(&mut self) {
        self.wrote_since_wait = true;
        self.slot.client.last_write_ms.store(self.slot.streams.now_ms(), Ordering::Relaxed);
    }

    /// Its heartbeat is due: it wrote nothing for `ORCH_STREAM_HEARTBEAT_MS`.
    fn heartbeat_due(&self) -> bool {
        let streams = &self.slot.streams;
        let every = u64::try_from(streams.heartbeat.as_millis()).unwrap_or(u64::MAX);
        streams.now_ms().saturating_sub(self.slot.client.last_write_ms.load(Ordering::Relaxed)) >= every
    }
}

impl MessageBody for Body {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self.get_mut();
        let mut registered = false;
        loop {
            if let Some(piece) = this.next_piece() {
                this.wrote();
                return Poll::Ready(Some(Ok(piece)));
            }
            match this.slot.client.pop(&this.slot.streams.unread) {
                Pop::Frame(f) => {
                    this.slot.streams.events.fetch_add(1, Ordering::Relaxed);
                    this.current = Some((f, 0, 0));
                    continue;
                }
                Pop::Closed => return Poll::Ready(None),
                Pop::Empty => {}
            }
            if !this.wrote_since_wait && this.heartbeat_due() {
                this.wrote();
                return Poll::Ready(Some(Ok(Bytes::from_static(HEARTBEAT))));
            }
            if registered {
                this.wrote_since_wait = false;
                return Poll::Pending;
            }
            // Looks once more after registering: an event pushed between the
            // look above and the registration is not missed. The broker
            // wakes the stream when its heartbeat is due (it looks at least
            // once a second while streams are open), so an idle stream
            // holds no timer of its own.
            this.slot.client.waker.register(cx.waker());
            registered = true;
        }
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
pub(crate) async fn stream(
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
    let query = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string()).ok();
    let asked = |name: &str| {
        query.as_ref().is_some_and(|q| q.get(name).is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on")))
    };
    let form = Form { refreshed: asked("refreshed"), changes: asked("changes") };
    let slot = match streams.open(last_event_id, form) {
        Ok(slot) => slot,
        Err(Refused::Stopping) => return unavailable("the mirror is stopping".to_owned()),
        Err(Refused::Full) => {
            return unavailable(format!(
                "too many open streams (ORCH_MAX_STREAMS={}); retry after {RETRY_AFTER_S} s",
                streams.max()
            ));
        }
    };
    event_stream(actix_web::http::StatusCode::OK).body(Body::new(slot))
}
