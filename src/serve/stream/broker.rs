//! The registry of open streams (their slots among `ORCH_MAX_STREAMS` and
//! their counters) and the broker loop that feeds them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Notify;

use super::client::{Client, Queue};
use super::cursor::{Key, instance_id, parse_cursor};
use super::frame::Frame;
use super::reading::Reading;
use super::refreshed::Freshness;
use crate::runtime::hub::{SubscriptionId, Update};
use crate::runtime::mirror::{Attachment, MirrorHandle, WeakMirrorHandle};

/// How often the broker looks for changes of status alone while streams are
/// open: the shortest refresh period, within these bounds.
pub const STATUS_CHECK: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

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
    pub(super) instance: String,
    pub(super) max: usize,
    pub(super) heartbeat: Duration,
    pub(super) open: AtomicUsize,
    pub(super) events: AtomicU64,
    pub(super) resyncs: AtomicU64,
    pub(super) clients: Mutex<Vec<Arc<Client>>>,
    pub(super) wake: Arc<Notify>,
    pub(super) stopped: AtomicBool,
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
pub(super) struct Slot {
    pub(super) streams: Arc<Streams>,
    pub(super) client: Arc<Client>,
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
    pub(super) fn open(self: &Arc<Self>, last_event_id: Option<String>, refreshed: bool) -> Option<Slot> {
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

/// The broker's hub subscriber: every section's update wakes the broker.
pub(super) struct Relay(Arc<Notify>);

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
pub(super) async fn broker(weak: WeakMirrorHandle, wake: Arc<Notify>) {
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
pub(super) fn pass(streams: &Streams, clients: &[Arc<Client>], before: &[Key], reading: &mut Reading) {
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
