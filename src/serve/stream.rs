//! `GET /metrics/stream` (CONTRACT section 6): Server-Sent Events carrying
//! what an in-process subscriber gets.
//!
//! One broker per mirror, on the mirror's own thread for such work, is a
//! subscriber of every section (the hub wakes it on each change) and, while
//! streams are open, also looks again every refresh period for changes of
//! status alone (a failed refresh, a stalled or dead actor). Each time it
//! reads every section's answer exactly as `/metrics` does, assembles the
//! envelope, and hands each open stream the sections whose sequence number or
//! status changed, as `section` events made once and shared by every stream.
//!
//! Each stream has a bounded queue ([`QUEUE_BYTES`], [`QUEUE_EVENTS`]). The
//! broker never waits for a stream: when an event does not fit, the stream's
//! pending events are dropped and replaced by one `resync` event and a fresh
//! envelope (counted), so a reader that stalls costs neither memory nor
//! anyone else's time.
//!
//! A client that asks for it (`?refreshed=1`) also gets, at most once per
//! [`REFRESHED_EVERY`], a `refreshed` event with every section's
//! `refreshed_at` and `age_ms` when a refresh found nothing new: a refresh
//! that changes nothing sends no `section` event, and a page that counts a
//! section's age up from its last event would show a healthy section ageing
//! without bound. The default stream does not carry it (a sidecar that
//! follows changes has no use for it, and thousands of them would pay for it).
//!
//! Every event's `id:` is a cursor: the broker's instance and each section's
//! sequence number and status. A client that reconnects with
//! `Last-Event-ID` gets the sections that changed since (each once, current
//! value); a cursor from another instance or that does not parse gets an
//! envelope.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::runtime::hub::{SubscriptionId, Update};
use crate::runtime::messages::Answer;
use crate::runtime::mirror::{Attachment, MirrorHandle, WeakMirrorHandle};
use crate::section::{SectionName, Status};
use crate::serve::envelope::{Clock, DISABLED_BODY, Envelope, SERVED_WITH, SectionState, assemble_with};

/// The most bytes of events one stream may have waiting (at least one event
/// always fits); past it the stream is resynchronised.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// The most events one stream may have waiting.
pub const QUEUE_EVENTS: usize = 1024;
/// What a client refused for too many streams is told to wait, in seconds.
pub const RETRY_AFTER_S: u64 = 5;
/// How often the broker looks for changes of status alone while streams are
/// open: the shortest refresh period, within these bounds.
pub const STATUS_CHECK: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// The least time between two `refreshed` events.
pub const REFRESHED_EVERY: Duration = Duration::from_secs(1);
/// How much of an event is handed to the connection at a time.
const SLICE: usize = 32 * 1024;
/// The heartbeat: an SSE comment line.
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// One event as sent, shared by every stream it goes to.
#[derive(Debug)]
struct Frame {
    parts: Vec<Bytes>,
    len: usize,
}

impl Frame {
    /// `event: <kind>`, an optional `id:`, and `data:` on one line.
    fn new(kind: &str, id: Option<&str>, data: Vec<Bytes>) -> Arc<Self> {
        let mut head = format!("event: {kind}\n");
        if let Some(id) = id {
            head.push_str("id: ");
            head.push_str(id);
            head.push('\n');
        }
        head.push_str("data: ");
        let mut parts = Vec::with_capacity(data.len() + 2);
        parts.push(Bytes::from(head));
        parts.extend(data);
        parts.push(Bytes::from_static(b"\n\n"));
        let len = parts.iter().map(Bytes::len).sum();
        if len <= SLICE {
            // One piece, joined once for every stream it goes to: each
            // stream then hands its connection one chunk per event.
            let mut joined = bytes::BytesMut::with_capacity(len);
            parts.iter().for_each(|p| joined.extend_from_slice(p));
            return Arc::new(Self { parts: vec![joined.freeze()], len });
        }
        Arc::new(Self { parts, len })
    }
}

/// One section's place in a cursor: its sequence number and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    seq: u64,
    status: Status,
}

fn letter(status: Status) -> char {
    match status {
        Status::Ok => 'o',
        Status::Stale => 's',
        Status::Pending => 'p',
        Status::Error => 'e',
        Status::Timeout => 't',
        Status::Unavailable => 'u',
    }
}

fn status_of(letter: char) -> Option<Status> {
    Some(match letter {
        'o' => Status::Ok,
        's' => Status::Stale,
        'p' => Status::Pending,
        'e' => Status::Error,
        't' => Status::Timeout,
        'u' => Status::Unavailable,
        _ => return None,
    })
}

/// Every section's key, in envelope order, as one `id:` value:
/// `<instance>.<seq><status letter>.…`, for example `9c1e….12o.40o.7s.3o`.
fn cursor(instance: &str, keys: &[Key]) -> String {
    let mut out = String::with_capacity(instance.len() + 8 * keys.len());
    out.push_str(instance);
    for k in keys {
        out.push('.');
        out.push_str(&k.seq.to_string());
        out.push(letter(k.status));
    }
    out
}

/// The keys a cursor names, when it is this instance's and could have been
/// sent by it (no sequence number ahead of `now`).
fn parse_cursor(instance: &str, raw: &str, now: &[Key]) -> Option<Vec<Key>> {
    let mut fields = raw.trim().split('.');
    if fields.next()? != instance {
        return None;
    }
    let keys: Vec<Key> = fields
        .map(|f| {
            let status = status_of(f.chars().last()?)?;
            let seq = f[..f.len() - 1].parse::<u64>().ok()?;
            Some(Key { seq, status })
        })
        .collect::<Option<_>>()?;
    (keys.len() == now.len() && keys.iter().zip(now).all(|(k, n)| k.seq <= n.seq)).then_some(keys)
}

/// Whether section `i`'s served value differs between two cursors' keys:
/// its own key changed, or the key of a section it is made with.
fn changed(sections: &[SectionName], i: usize, from: &[Key], to: &[Key]) -> bool {
    if from[i] != to[i] {
        return true;
    }
    SERVED_WITH
        .iter()
        .filter(|(s, _)| *s == sections[i])
        .filter_map(|(_, with)| sections.iter().position(|n| n == with))
        .any(|j| from[j].seq != to[j].seq)
}

/// The head of a `section` event; `data` follows.
#[derive(Serialize)]
struct SectionHead<'a> {
    section: SectionName,
    seq: u64,
    #[serde(flatten)]
    state: &'a SectionState,
}

/// What one broker pass read: the envelope and every section's key.
struct Reading {
    sections: Vec<SectionName>,
    keys: Vec<Key>,
    envelope: Envelope,
    /// The envelope event, made when first needed.
    envelope_frame: Option<Arc<Frame>>,
}

impl Reading {
    fn read(answers: Vec<Answer>, previous: &[Key], handle: &MirrorHandle) -> Self {
        let sections: Vec<SectionName> = answers.iter().map(|a| a.section).collect();
        let clock = Clock::now();
        let keys = answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let state_seq = a.reply.as_ref().map(|r| r.seq).ok();
                let envelope_status = match &a.reply {
                    Ok(r) => r.status,
                    Err(MailboxError::Timeout) => Status::Timeout,
                    Err(MailboxError::Closed) => Status::Unavailable,
                };
                // Without an answer the section keeps the sequence number its clients know.
                let seq = state_seq.unwrap_or_else(|| previous.get(i).map_or(0, |k| k.seq));
                Key { seq, status: envelope_status }
            })
            .collect();
        let envelope = assemble_with(answers, clock, handle.snapshot_timeout(), handle.render_cache());
        Self { sections, keys, envelope, envelope_frame: None }
    }

    /// The `envelope` event, exactly `/metrics`'s body for this reading.
    fn envelope_frame(&mut self, instance: &str) -> Arc<Frame> {
        if let Some(f) = &self.envelope_frame {
            return Arc::clone(f);
        }
        let data = match self.envelope.json_parts() {
            Ok(parts) => parts,
            // Serialising plain data cannot fail; if it ever does, the client still gets JSON.
            Err(e) => vec![Bytes::from(serde_json::json!({ "error": e.to_string() }).to_string())],
        };
        let frame = Frame::new("envelope", Some(&cursor(instance, &self.keys)), data);
        self.envelope_frame = Some(Arc::clone(&frame));
        frame
    }

    /// One `section` event per section whose served value changed since
    /// `from`, each with the cursor as of that event.
    fn section_frames(&self, instance: &str, from: &[Key]) -> Vec<Arc<Frame>> {
        let mut at = from.to_vec();
        let mut frames = Vec::new();
        for (i, name) in self.sections.iter().enumerate() {
            if !changed(&self.sections, i, from, &self.keys) {
                continue;
            }
            at[i] = self.keys[i];
            let mut data = Vec::with_capacity(3);
            let mut head = Vec::with_capacity(160);
            let state = &self.envelope.sections[*name];
            if let Err(e) = serde_json::to_writer(&mut head, &SectionHead { section: *name, seq: at[i].seq, state }) {
                tracing::error!(section = %name, error = %e, "cannot serialise a section event");
                continue;
            }
            head.pop(); // the closing brace: `data` follows
            head.extend_from_slice(b",\"data\":");
            match self.envelope.data[*name].as_ref().map(|d| d.json()) {
                Some(Ok(json)) => {
                    data.push(Bytes::from(head));
                    data.push(json);
                    data.push(Bytes::from_static(b"}"));
                }
                Some(Err(e)) => {
                    tracing::error!(section = %name, error = %e, "cannot serialise a section's data");
                    continue;
                }
                None => {
                    head.extend_from_slice(b"null}");
                    data.push(Bytes::from(head));
                }
            }
            frames.push(Frame::new("section", Some(&cursor(instance, &at)), data));
        }
        frames
    }
}

/// One stream's waiting events.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Arc<Frame>>,
    bytes: usize,
    /// The broker has sent this stream its first events.
    joined: bool,
    /// A `resync` is waiting that the stream has not started to send.
    resync_waiting: bool,
    /// The mirror is stopping: the stream ends.
    closed: bool,
}

/// One open stream, as the broker sees it.
struct Client {
    queue: Mutex<Queue>,
    notify: Notify,
    /// `Last-Event-ID`, if the client sent one.
    last_event_id: Option<String>,
    /// The client asked for `refreshed` events.
    refreshed: bool,
    /// The response is gone (the client disconnected).
    gone: AtomicBool,
}

enum Pop {
    Frame(Arc<Frame>),
    Empty,
    Closed,
}

impl Client {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pop(&self) -> Pop {
        let mut q = self.queue();
        match q.frames.pop_front() {
            Some(f) => {
                q.bytes -= f.len;
                if q.resync_waiting && q.frames.len() <= 1 {
                    // The resync itself is going out; only the envelope follows.
                    q.resync_waiting = false;
                }
                Pop::Frame(f)
            }
            None if q.closed => Pop::Closed,
            None => Pop::Empty,
        }
    }

    /// The first events of a new stream.
    fn start(&self, frames: Vec<Arc<Frame>>) {
        let mut q = self.queue();
        for f in frames {
            q.bytes += f.len;
            q.frames.push_back(f);
        }
        q.joined = true;
        drop(q);
        self.notify.notify_one();
    }

    /// Queues `frames` when they fit; otherwise drops what waits and queues a
    /// `resync` and a fresh envelope instead. True when it resynchronised
    /// (not counting a resync that replaces one still waiting).
    fn push(&self, frames: &[Arc<Frame>], resync: impl FnOnce(usize) -> (Arc<Frame>, Arc<Frame>)) -> bool {
        let mut q = self.queue();
        let add: usize = frames.iter().map(|f| f.len).sum();
        let fits =
            q.frames.is_empty() || (q.bytes + add <= QUEUE_BYTES && q.frames.len() + frames.len() <= QUEUE_EVENTS);
        let counted = if fits && !q.resync_waiting {
            for f in frames {
                q.frames.push_back(Arc::clone(f));
            }
            q.bytes += add;
            false
        } else {
            // Waiting behind an unsent resync, events would repeat what its
            // envelope says; a fresh envelope replaces the waiting one.
            let counted = !q.resync_waiting;
            let dropped = q.frames.len() + frames.len();
            let (resync, envelope) = resync(dropped);
            q.frames.clear();
            q.bytes = resync.len + envelope.len;
            q.frames.push_back(resync);
            q.frames.push_back(envelope);
            q.resync_waiting = true;
            counted
        };
        drop(q);
        self.notify.notify_one();
        counted
    }

    /// Queues `frame` only when nothing waits (it never causes a resync).
    fn offer(&self, frame: &Arc<Frame>) {
        let mut q = self.queue();
        if !q.frames.is_empty() || q.closed {
            return;
        }
        q.bytes += frame.len;
        q.frames.push_back(Arc::clone(frame));
        drop(q);
        self.notify.notify_one();
    }

    fn close(&self) {
        self.queue().closed = true;
        self.notify.notify_one();
    }
}

/// Stream counters (for `/health` and the exposition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StreamTotals {
    /// Streams open now.
    pub open: u64,
    /// Events sent, over all streams ever (heartbeats not counted).
    pub events: u64,
    /// Times a stream's pending events were dropped for a `resync`.
    pub resyncs: u64,
}

/// The mirror's streams: their broker, slots and counters.
pub struct Streams {
    instance: String,
    max: usize,
    heartbeat: Duration,
    open: AtomicUsize,
    events: AtomicU64,
    resyncs: AtomicU64,
    clients: Mutex<Vec<Arc<Client>>>,
    wake: Arc<Notify>,
    stopped: AtomicBool,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").field("totals", &self.totals()).finish_non_exhaustive()
    }
}

impl Attachment for Streams {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for c in self.clients.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            c.close();
        }
        self.wake.notify_one();
    }
}

/// A stream's place among the `ORCH_MAX_STREAMS`; given back when dropped.
struct Slot {
    streams: Arc<Streams>,
    client: Arc<Client>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.client.gone.store(true, Ordering::SeqCst);
        self.streams.open.fetch_sub(1, Ordering::SeqCst);
        self.streams.wake.notify_one();
    }
}

impl Streams {
    /// The mirror's streams, started on first use; `None` when the mirror is
    /// disabled or stopping.
    pub fn of(handle: &MirrorHandle) -> Option<Arc<Streams>> {
        handle.attachment(|aux| {
            let wake = Arc::new(Notify::new());
            let streams = Streams {
                instance: instance_id(handle.id()),
                max: handle.max_streams(),
                heartbeat: handle.stream_heartbeat(),
                open: AtomicUsize::new(0),
                events: AtomicU64::new(0),
                resyncs: AtomicU64::new(0),
                clients: Mutex::new(Vec::new()),
                wake: Arc::clone(&wake),
                stopped: AtomicBool::new(false),
            };
            let weak = handle.downgrade();
            aux.spawn_fn(move || {
                actix::spawn(broker(weak, wake));
            });
            streams
        })
    }

    /// The counters, when streams were ever used on `handle`.
    pub fn totals_of(handle: &MirrorHandle) -> StreamTotals {
        handle.attached::<Streams>().map(|s| s.totals()).unwrap_or_default()
    }

    /// Open streams, events sent and resyncs.
    pub fn totals(&self) -> StreamTotals {
        StreamTotals {
            open: self.open.load(Ordering::SeqCst) as u64,
            events: self.events.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
        }
    }

    /// A new stream, if there is a free slot.
    fn open(self: &Arc<Self>, last_event_id: Option<String>, refreshed: bool) -> Option<Slot> {
        if self.stopped.load(Ordering::SeqCst) {
            return None;
        }
        self.open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.max).then_some(n + 1)).ok()?;
        let client = Arc::new(Client {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            last_event_id,
            refreshed,
            gone: AtomicBool::new(false),
        });
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&client));
        if self.stopped.load(Ordering::SeqCst) {
            client.close(); // stopped while joining
        }
        self.wake.notify_one();
        Some(Slot { streams: Arc::clone(self), client })
    }
}

/// An identifier of this broker that no other process or mirror shares, so
/// a cursor from before a restart is recognised as such.
fn instance_id(mirror: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(mirror);
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The broker's hub subscriber: every section's update wakes the broker.
struct Relay(Arc<Notify>);

impl Actor for Relay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Wakes coalesce; a deep mailbox only keeps the hub from counting drops.
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Update> for Relay {
    type Result = ();

    fn handle(&mut self, _: Update, _: &mut Self::Context) {
        self.0.notify_one();
    }
}

/// The broker: runs on the mirror's auxiliary thread until the mirror stops.
async fn broker(weak: WeakMirrorHandle, wake: Arc<Notify>) {
    let relay = Relay(Arc::clone(&wake)).start();
    let mut subscriptions: Vec<SubscriptionId> = Vec::new();
    let mut keys: Vec<Key> = Vec::new();
    let mut instance_and_streams: Option<Arc<Streams>> = None;
    let mut freshness = Freshness::default();
    loop {
        let Some(handle) = weak.upgrade() else { return };
        let Some(streams) = instance_and_streams.clone().or_else(|| handle.attached::<Streams>()) else {
            // Not registered yet (the attachment is made just after this task is spawned).
            drop(handle);
            wake.notified().await;
            continue;
        };
        instance_and_streams = Some(Arc::clone(&streams));
        if streams.stopped.load(Ordering::SeqCst) {
            return;
        }
        let clients: Vec<Arc<Client>> = {
            let mut all = streams.clients.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|c| !c.gone.load(Ordering::SeqCst));
            all.clone()
        };
        if clients.is_empty() {
            // Nobody listens: no subscription, no status checks, no reads.
            for id in subscriptions.drain(..) {
                handle.unsubscribe(id);
            }
            drop(handle);
            wake.notified().await;
            continue;
        }
        if subscriptions.is_empty() {
            subscriptions = handle.subscribe_all(relay.clone().recipient());
        }
        let period = handle.shortest_period().clamp(STATUS_CHECK.0, STATUS_CHECK.1);
        if let Some(answers) = handle.answers().await {
            let mut reading = Reading::read(answers, &keys, &handle);
            if keys.len() != reading.keys.len() {
                keys = reading.keys.clone();
            }
            pass(&streams, &clients, &keys, &mut reading);
            freshness.pass(&clients, &reading);
            keys = reading.keys;
        }
        drop(handle);
        // A change wakes the broker at once; a change of status alone is seen within `period`.
        let _ = tokio::time::timeout(period, wake.notified()).await;
    }
}

/// One pass: each joined stream gets what changed since `before`; each new
/// one its first events.
fn pass(streams: &Streams, clients: &[Arc<Client>], before: &[Key], reading: &mut Reading) {
    let instance = streams.instance.as_str();
    let frames = reading.section_frames(instance, before);
    for client in clients {
        if !client.queue().joined {
            let resumed = client
                .last_event_id
                .as_deref()
                .and_then(|id| parse_cursor(instance, id, &reading.keys))
                .map(|from| reading.section_frames(instance, &from));
            let first = resumed.unwrap_or_else(|| vec![reading.envelope_frame(instance)]);
            client.start(first);
        } else if !frames.is_empty() {
            let resynced = client.push(&frames, |dropped| {
                let data = serde_json::json!({
                    "dropped": dropped,
                    "reason": "the client read too slowly; its pending events were dropped and a fresh envelope follows",
                });
                (Frame::new("resync", None, vec![Bytes::from(data.to_string())]), reading.envelope_frame(instance))
            });
            if resynced {
                streams.resyncs.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("a stream read too slowly; resynchronised");
            }
        }
    }
}

/// One section in a `refreshed` event.
#[derive(Serialize)]
struct Refreshed {
    #[serde(serialize_with = "crate::source::time::serialize_opt_millis")]
    refreshed_at: Option<chrono::DateTime<chrono::Utc>>,
    age_ms: Option<i64>,
}

/// A `refreshed` event's body: one key per section, in envelope order.
struct InOrder<'a>(&'a [(SectionName, Refreshed)]);

impl Serialize for InOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, r)| (name.as_str(), r)))
    }
}

/// When the broker last sent `refreshed` events, and the refresh times they carried.
#[derive(Default)]
struct Freshness {
    sent_at: Option<Instant>,
    refreshed_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
}

impl Freshness {
    /// Sends the clients that asked for it a `refreshed` event when a
    /// section's `refreshed_at` moved since the last one, at most once per
    /// [`REFRESHED_EVERY`]. A client with events still waiting skips it (the
    /// next one says the same, newer).
    fn pass(&mut self, clients: &[Arc<Client>], reading: &Reading) {
        let now: Vec<_> = reading.sections.iter().map(|n| reading.envelope.sections[*n].refreshed_at).collect();
        if now == self.refreshed_at || self.sent_at.is_some_and(|t| t.elapsed() < REFRESHED_EVERY) {
            return;
        }
        let wanting: Vec<&Arc<Client>> = clients.iter().filter(|c| c.refreshed && c.queue().joined).collect();
        if wanting.is_empty() {
            return;
        }
        let body: Vec<(SectionName, Refreshed)> = reading
            .sections
            .iter()
            .map(|n| {
                let s = &reading.envelope.sections[*n];
                (*n, Refreshed { refreshed_at: s.refreshed_at, age_ms: s.age_ms })
            })
            .collect();
        let json = match serde_json::to_vec(&InOrder(&body)) {
            Ok(j) => j,
            Err(e) => return tracing::error!(error = %e, "cannot serialise a refreshed event"),
        };
        let frame = Frame::new("refreshed", None, vec![Bytes::from(json)]);
        for client in wanting {
            client.offer(&frame);
        }
        self.sent_at = Some(Instant::now());
        self.refreshed_at = now;
    }
}

/// What a stream's response body reads from.
struct Body {
    slot: Slot,
    pending: VecDeque<Bytes>,
    last_write: Instant,
}

impl Body {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Body)> {
        let client = Arc::clone(&self.slot.client);
        let heartbeat = self.slot.streams.heartbeat;
        loop {
            if let Some(b) = self.pending.pop_front() {
                self.last_write = Instant::now();
                return Some((Ok(b), self));
            }
            match client.pop() {
                Pop::Frame(f) => {
                    self.slot.streams.events.fetch_add(1, Ordering::Relaxed);
                    for part in &f.parts {
                        for at in (0..part.len()).step_by(SLICE) {
                            self.pending.push_back(part.slice(at..(at + SLICE).min(part.len())));
                        }
                    }
                    continue;
                }
                Pop::Closed => return None,
                Pop::Empty => {}
            }
            let due = self.last_write + heartbeat;
            if Instant::now() >= due {
                self.last_write = Instant::now();
                return Some((Ok(Bytes::from_static(HEARTBEAT)), self));
            }
            // A push between `pop` and here leaves a permit: no wake-up is lost.
            let _ = tokio::time::timeout_at(due, client.notify.notified()).await;
        }
    }
}

fn event_stream(status: actix_web::http::StatusCode) -> actix_web::HttpResponseBuilder {
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
pub async fn stream(req: HttpRequest, handle: web::Data<MirrorHandle>) -> HttpResponse {
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
    let Some(streams) = Streams::of(&handle) else {
        return unavailable("the mirror is stopping".to_owned());
    };
    let last_event_id = req.headers().get("Last-Event-ID").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Other query parameters are ignored, as on `/metrics`.
    let refreshed = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .is_ok_and(|q| q.get("refreshed").is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on")));
    let Some(slot) = streams.open(last_event_id, refreshed) else {
        return unavailable(format!(
            "too many open streams (ORCH_MAX_STREAMS={}); retry after {RETRY_AFTER_S} s",
            streams.max
        ));
    };
    let body = Body { slot, pending: VecDeque::new(), last_write: Instant::now() };
    event_stream(actix_web::http::StatusCode::OK).streaming(futures_util::stream::unfold(body, Body::next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[(u64, Status)]) -> Vec<Key> {
        k.iter().map(|&(seq, status)| Key { seq, status }).collect()
    }

    #[test]
    fn a_cursor_reads_back_only_on_its_own_instance_and_never_ahead() {
        let now = keys(&[(12, Status::Ok), (40, Status::Stale), (0, Status::Pending), (3, Status::Timeout)]);
        let id = cursor("abc", &now);
        assert_eq!(id, "abc.12o.40s.0p.3t");
        assert_eq!(parse_cursor("abc", &id, &now), Some(now.clone()));
        assert_eq!(parse_cursor("xyz", &id, &now), None, "another instance");
        let ahead = cursor("abc", &keys(&[(13, Status::Ok), (40, Status::Ok), (0, Status::Ok), (3, Status::Ok)]));
        assert_eq!(parse_cursor("abc", &ahead, &now), None, "a sequence number this instance never sent");
        for garbage in
            ["", "abc", "abc.1o.2o.3o", "abc.1o.2o.3o.4o.5o", "abc.xo.1o.2o.3o", "abc.1q.1o.2o.3o", "abc.o.1o.2o.3o"]
        {
            assert_eq!(parse_cursor("abc", garbage, &now), None, "{garbage:?}");
        }
    }

    #[test]
    fn cost_changes_with_the_agents_it_is_served_with() {
        let names = [SectionName::STAGES, SectionName::QUEUE, SectionName::AGENTS, SectionName::COST];
        let from = keys(&[(1, Status::Ok), (1, Status::Ok), (1, Status::Ok), (1, Status::Ok)]);
        let to = keys(&[(1, Status::Ok), (1, Status::Ok), (2, Status::Ok), (1, Status::Ok)]);
        let which: Vec<bool> = (0..4).map(|i| changed(&names, i, &from, &to)).collect();
        assert_eq!(which, [false, false, true, true]);
        let stale = keys(&[(1, Status::Stale), (1, Status::Ok), (1, Status::Ok), (1, Status::Ok)]);
        let which: Vec<bool> = (0..4).map(|i| changed(&names, i, &from, &stale)).collect();
        assert_eq!(which, [true, false, false, false], "a status change alone is a change");
    }

    fn frame(len: usize) -> Arc<Frame> {
        Arc::new(Frame { parts: vec![Bytes::from(vec![b'x'; len])], len })
    }

    #[test]
    fn a_full_queue_resyncs_once_and_a_waiting_resync_takes_the_newest_envelope() {
        let client = Client {
            queue: Mutex::new(Queue { joined: true, ..Queue::default() }),
            notify: Notify::new(),
            last_event_id: None,
            refreshed: false,
            gone: AtomicBool::new(false),
        };
        let resync = |tag: usize| move |_| (frame(1), frame(tag));
        let big = frame(QUEUE_BYTES / 2 + 1);
        assert!(!client.push(&[Arc::clone(&big)], resync(10)), "an empty queue takes anything");
        assert!(client.push(&[Arc::clone(&big)], resync(11)), "past the bound: resync");
        assert_eq!(client.queue().frames.iter().map(|f| f.len).collect::<Vec<_>>(), [1, 11]);
        assert!(!client.push(&[frame(5)], resync(12)), "a waiting resync is not counted again");
        assert_eq!(client.queue().frames.iter().map(|f| f.len).collect::<Vec<_>>(), [1, 12]);
        assert!(matches!(client.pop(), Pop::Frame(f) if f.len == 1), "the resync goes first");
        assert!(!client.push(&[frame(5)], resync(13)), "after the resync went out, events queue again");
        assert_eq!(client.queue().frames.iter().map(|f| f.len).collect::<Vec<_>>(), [12, 5]);
        assert!(client.queue().bytes == 17);
    }
}
