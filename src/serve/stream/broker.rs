//! The registry of open streams (their slots among `ORCH_MAX_STREAMS` and
//! their counters) and the broker loop that feeds them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Notify;

use super::changes::Held;
use super::client::{Client, Queue};
use super::cursor::{Key, parse_cursor};
use super::frame::Frame;
use super::reading::Reading;
use super::refreshed::Freshness;
use crate::runtime::handle::{MirrorHandle, WeakMirrorHandle};
use crate::runtime::hub::SubscriptionId;

/// How one broker pass hands a change to many streams: a batch at a time,
/// the next when all but a few of the streams it woke (and any woken
/// before) have taken their events, or after a pause at most. A change
/// that woke every stream at once had each HTTP worker write to thousands
/// of them in one burst while a `/metrics` request on it waited behind them
/// all (p99 74 ms at 10,000 streams); batches at a fixed pace still let the
/// workers' queues grow when writing a batch took longer than the pause.
struct Pace {
    /// Streams woken per batch.
    batch: usize,
    /// The next batch goes when at most this many of the streams woken
    /// since the batch began have not taken their events...
    unread: usize,
    /// ...or, at the latest, after this long (a stream whose reader stalled
    /// never takes them; it holds nobody back).
    wait: Duration,
    /// How often the broker looks meanwhile.
    look: Duration,
}

const PACE: Pace = Pace { batch: 512, unread: 128, wait: Duration::from_millis(20), look: Duration::from_millis(1) };

/// How often the broker looks for changes of status alone while streams are
/// open: the shortest refresh period, within these bounds.
pub(super) const STATUS_CHECK: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

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
    /// How many streams may be open at once (`ORCH_MAX_STREAMS`, or what the
    /// open-files limit leaves).
    pub max: u64,
}

/// A mirror's streams: their broker, slots and counters. Made by the routes
/// ([`crate::serve::http::Routes`]); the broker starts with the first stream
/// and ends with the mirror.
pub(crate) struct Streams {
    pub(super) instance: String,
    /// `ORCH_MAX_STREAMS`, lowered by the server to what its connection cap leaves.
    pub(super) max: AtomicUsize,
    pub(super) heartbeat: Duration,
    pub(super) open: AtomicUsize,
    pub(super) events: AtomicU64,
    pub(super) resyncs: AtomicU64,
    /// Streams handed events they have not all taken yet (the pace of a pass).
    pub(super) unread: AtomicUsize,
    pub(super) clients: Mutex<Vec<Arc<Client>>>,
    pub(super) wake: Arc<Notify>,
    pub(super) stopped: AtomicBool,
    /// What the streams' `last_write_ms` count from.
    epoch: Instant,
    mirror: WeakMirrorHandle,
    /// The broker's own thread, apart from the section actors and the HTTP
    /// workers; started with the first stream.
    broker: std::sync::OnceLock<Arbiter>,
}

/// What a client asked its stream to carry besides the plain events.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Form {
    /// `refreshed` events (`?refreshed=1`).
    pub(super) refreshed: bool,
    /// `change` events instead of `section` events (`?changes=1`).
    pub(super) changes: bool,
}

/// Why a stream was not opened.
pub(super) enum Refused {
    /// The mirror or the server is stopping.
    Stopping,
    /// `ORCH_MAX_STREAMS` streams are open.
    Full,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").field("totals", &self.totals()).finish_non_exhaustive()
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        if let Some(broker) = self.broker.get() {
            broker.stop();
        }
    }
}

/// A stream's place among the `ORCH_MAX_STREAMS`; given back when dropped.
pub(super) struct Slot {
    pub(super) streams: Arc<Streams>,
    pub(super) client: Arc<Client>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.client.gone(&self.streams.unread);
        self.streams.open.fetch_sub(1, Ordering::SeqCst);
        self.streams.wake.notify_one();
    }
}

impl Streams {
    /// `handle`'s streams: at most `max` open at once, an idle one sending a
    /// heartbeat every `heartbeat`.
    pub(crate) fn new(handle: &MirrorHandle, max: usize, heartbeat: Duration) -> Arc<Self> {
        Arc::new(Streams {
            instance: format!("{:016x}", handle.instance()),
            max: AtomicUsize::new(max),
            heartbeat,
            open: AtomicUsize::new(0),
            events: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            unread: AtomicUsize::new(0),
            clients: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
            stopped: AtomicBool::new(false),
            epoch: Instant::now(),
            mirror: handle.downgrade(),
            broker: std::sync::OnceLock::new(),
        })
    }

    /// Milliseconds since this registry was made.
    pub(super) fn now_ms(&self) -> u64 {
        crate::source::time::ms_since(self.epoch)
    }

    /// Wakes every stream whose heartbeat is due; it writes one.
    fn wake_for_heartbeats(&self, clients: &[Arc<Client>]) {
        let (now, every) = (self.now_ms(), u64::try_from(self.heartbeat.as_millis()).unwrap_or(u64::MAX));
        for c in clients {
            if now.saturating_sub(c.last_write_ms.load(Ordering::Relaxed)) >= every {
                c.wake();
            }
        }
    }

    /// How many streams may be open at once.
    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// Lowers the cap to `n` (the server does, to keep connections for the
    /// other routes); never raises it. Streams already open stay.
    pub(crate) fn cap(&self, n: usize) {
        self.max.fetch_min(n, Ordering::SeqCst);
    }

    /// Ends every open stream and refuses new ones (the server is stopping,
    /// or the mirror stopped).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for c in self.clients.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            c.close();
        }
        self.wake.notify_one();
        if let Some(broker) = self.broker.get() {
            broker.stop();
        }
    }

    /// Open streams, events sent and resyncs.
    pub(crate) fn totals(&self) -> StreamTotals {
        StreamTotals {
            open: self.open.load(Ordering::SeqCst) as u64,
            events: self.events.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            max: self.max() as u64,
        }
    }

    /// A new stream, if there is a free slot.
    pub(super) fn open(self: &Arc<Self>, last_event_id: Option<String>, form: Form) -> Result<Slot, Refused> {
        let mirror = self.mirror.upgrade().filter(|m| !m.is_stopping());
        let Some(mirror) = mirror.filter(|_| !self.stopped.load(Ordering::SeqCst)) else {
            return Err(Refused::Stopping);
        };
        let max = self.max();
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .map_err(|_| Refused::Full)?;
        self.broker.get_or_init(|| {
            let broker = Arbiter::new();
            let (streams, stopped) = (Arc::downgrade(self), mirror.stopped());
            let (mirror, wake) = (self.mirror.clone(), Arc::clone(&self.wake));
            // Spawned from the broker's thread: the loop's actor and futures live there.
            broker.spawn_fn(move || {
                actix::spawn(broker_loop(mirror, streams, wake, stopped));
            });
            broker
        });
        let client = Arc::new(Client {
            queue: Mutex::new(Queue::default()),
            waker: futures_util::task::AtomicWaker::new(),
            last_event_id,
            refreshed: form.refreshed,
            changes: form.changes,
            gone: AtomicBool::new(false),
            last_write_ms: AtomicU64::new(self.now_ms()),
        });
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&client));
        if self.stopped.load(Ordering::SeqCst) {
            client.close(); // stopped while joining
        }
        self.wake.notify_one();
        Ok(Slot { streams: Arc::clone(self), client })
    }
}

/// The broker: runs on its own thread until the streams stop or the mirror
/// stops (which ends every open stream).
async fn broker_loop(
    mirror: WeakMirrorHandle,
    streams: Weak<Streams>,
    wake: Arc<Notify>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut subscriptions: Vec<SubscriptionId> = Vec::new();
    let mut keys: Vec<Key> = Vec::new();
    // Each section's data as the streams at `keys` last got it.
    let mut sent: Vec<Option<Bytes>> = Vec::new();
    // Each section's value as the changes-only form's readers hold it (while there are any).
    let mut held: Vec<Option<Held>> = Vec::new();
    let mut freshness = Freshness::default();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let (Some(handle), Some(open)) = (mirror.upgrade(), streams.upgrade()) else {
            streams.upgrade().inspect(|s| s.stop());
            return;
        };
        if open.stopped.load(Ordering::SeqCst) {
            return;
        }
        let clients: Vec<Arc<Client>> = {
            let mut all = open.clients.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|c| !c.gone.load(Ordering::SeqCst));
            all.clone()
        };
        // Nobody listens: no subscription, no status checks, no reads.
        let mut period = None;
        if clients.is_empty() {
            for id in subscriptions.drain(..) {
                handle.unsubscribe(id);
            }
        } else {
            if subscriptions.is_empty() {
                subscriptions = handle.notify_all(&wake);
            }
            period = Some(handle.shortest_period().clamp(STATUS_CHECK.0, STATUS_CHECK.1));
            if let Some(answers) = handle.answers().await {
                let mut reading = Reading::read(answers, &keys, &handle);
                if keys.len() != reading.keys.len() {
                    keys = reading.keys.clone();
                }
                pass(&open, &clients, &keys, &sent, &mut held, &mut reading).await;
                freshness.pass(&clients, &reading);
                sent = reading.data_json();
                keys = reading.keys;
            }
            open.wake_for_heartbeats(&clients);
        }
        drop((handle, open, clients));
        // A change wakes the broker at once; a change of status alone is seen within `period`.
        let woken = async {
            match period {
                Some(period) => drop(tokio::time::timeout(period, wake.notified()).await),
                None => wake.notified().await,
            }
        };
        tokio::select! {
            () = woken => {}
            () = &mut stopped => {
                streams.upgrade().inspect(|s| s.stop());
                return;
            }
        }
    }
}

/// Waits until at most `PACE.unread` more streams than `before` have events
/// they have not taken (`unread`), or `PACE.wait` at most.
async fn paced(unread: &AtomicUsize, before: usize) {
    let start = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(PACE.look).await;
        if unread.load(Ordering::Acquire) <= before + PACE.unread || start.elapsed() >= PACE.wait {
            return;
        }
    }
}

/// One pass: each joined stream gets what changed since `before` (as
/// `section` events, or `change` events against `held` on the changes-only
/// form); each new one its first events.
pub(super) async fn pass(
    streams: &Streams,
    clients: &[Arc<Client>],
    before: &[Key],
    sent: &[Option<Bytes>],
    held: &mut Vec<Option<Held>>,
    reading: &mut Reading,
) {
    let instance = streams.instance.as_str();
    let joined = |changes: bool| clients.iter().any(|c| c.changes == changes && c.queue().joined);
    let frames = if joined(false) { reading.section_frames(instance, before, Some(sent)) } else { Vec::new() };
    let change_frames = if !clients.iter().any(|c| c.changes) {
        held.clear();
        Vec::new()
    } else if held.len() != reading.sections.len() {
        // The first readers of the form: they join with this reading's envelope.
        *held = reading.held();
        Vec::new()
    } else {
        reading.change_frames(instance, before, Some(sent), Some(held))
    };
    let mut unread_before = streams.unread.load(Ordering::Acquire);
    for (i, client) in clients.iter().enumerate() {
        if i > 0 && i % PACE.batch == 0 {
            // The HTTP workers write to the streams already woken meanwhile,
            // and answer other requests between them.
            paced(&streams.unread, unread_before).await;
            unread_before = streams.unread.load(Ordering::Acquire);
        }
        if !client.queue().joined {
            let resumed =
                client.last_event_id.as_deref().and_then(|id| parse_cursor(instance, id, &reading.keys)).map(|from| {
                    if client.changes {
                        // What it holds may be older than what changes are made against: every section, whole.
                        reading.change_frames(instance, &from, None, None)
                    } else {
                        reading.section_frames(instance, &from, None)
                    }
                });
            let first = resumed.unwrap_or_else(|| vec![reading.envelope_frame(instance)]);
            client.start(first, &streams.unread);
        } else if !(if client.changes { &change_frames } else { &frames }).is_empty() {
            let frames = if client.changes { &change_frames } else { &frames };
            let resynced = client.push(frames, &streams.unread, |dropped| {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The next batch waits for the streams woken to take their events, but
    /// never for streams that never do.
    #[test]
    fn a_pass_waits_for_readers_but_not_for_stalled_ones() -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        rt.block_on(async {
            let unread = Arc::new(AtomicUsize::new(10 + PACE.batch));
            // The batch's streams take their events a little later: the pass goes on then.
            let taking = Arc::clone(&unread);
            let started = tokio::time::Instant::now();
            tokio::spawn(async move {
                tokio::time::sleep(PACE.wait / 4).await;
                taking.store(10 + PACE.unread, Ordering::Release);
            });
            paced(&unread, 10).await;
            let waited = started.elapsed();
            assert!(waited >= PACE.wait / 4, "went on before the readers took their events: {waited:?}");
            assert_eq!(unread.load(Ordering::Acquire), 10 + PACE.unread);
            // Streams that never take theirs: the pass goes on after PACE.wait.
            unread.store(10 + PACE.batch, Ordering::Release);
            let started = tokio::time::Instant::now();
            tokio::time::timeout(Duration::from_secs(10), paced(&unread, 10))
                .await
                .map_err(|_| std::io::Error::other("a pass waited for ever on stalled readers"))?;
            assert!(started.elapsed() >= PACE.wait, "did not wait at all");
            Ok(())
        })
    }
}
