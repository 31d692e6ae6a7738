//! One stream's bounded queue and its resync policy: the broker never waits
//! for a stream; when an event does not fit, what waits is dropped and
//! replaced by one `resync` event and a fresh envelope.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;

use super::frame::Frame;

/// The most bytes of events one stream may have waiting (at least one event
/// always fits); past it the stream is resynchronised.
pub(super) const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// The most events one stream may have waiting.
pub(super) const QUEUE_EVENTS: usize = 1024;

/// One stream's waiting events.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) frames: VecDeque<Arc<Frame>>,
    pub(super) bytes: usize,
    /// The broker has sent this stream its first events.
    pub(super) joined: bool,
    /// A `resync` is waiting that the stream has not started to send.
    pub(super) resync_waiting: bool,
    /// The mirror is stopping: the stream ends.
    pub(super) closed: bool,
    /// The stream is counted in its broker's `unread`: it was handed events
    /// by a pass and has not taken them all. Changed under the queue's lock
    /// with the count itself, so the count never goes below zero.
    pub(super) counted: bool,
}

impl Queue {
    fn count(&mut self, unread: &AtomicUsize) {
        if !std::mem::replace(&mut self.counted, true) {
            unread.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn uncount(&mut self, unread: &AtomicUsize) {
        if std::mem::replace(&mut self.counted, false) {
            unread.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One open stream, as the broker sees it.
pub(super) struct Client {
    pub(super) queue: Mutex<Queue>,
    /// The stream's response body, waiting for events (an atomic swap to
    /// wake it: no lock, no allocation).
    pub(super) waker: AtomicWaker,
    /// `Last-Event-ID`, if the client sent one.
    pub(super) last_event_id: Option<String>,
    /// The client asked for `refreshed` events.
    pub(super) refreshed: bool,
    /// The client asked for the changes-only form (`change` events).
    pub(super) changes: bool,
    /// The response is gone (the client disconnected).
    pub(super) gone: AtomicBool,
    /// When the stream last wrote (an event or a heartbeat), in milliseconds
    /// since its registry's epoch: the broker wakes a stream whose heartbeat
    /// is due, so an idle stream needs no timer of its own.
    pub(super) last_write_ms: AtomicU64,
}

pub(super) enum Pop {
    Frame(Arc<Frame>),
    Empty,
    Closed,
}

impl Client {
    pub(super) fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next waiting event; taking the last uncounts the stream from `unread`.
    pub(super) fn pop(&self, unread: &AtomicUsize) -> Pop {
        let mut q = self.queue();
        match q.frames.pop_front() {
            Some(f) => {
                q.bytes -= f.len;
                if q.resync_waiting && q.frames.len() <= 1 {
                    // The resync itself is going out; only the envelope follows.
                    q.resync_waiting = false;
                }
                if q.frames.is_empty() {
                    q.uncount(unread);
                }
                Pop::Frame(f)
            }
            None if q.closed => Pop::Closed,
            None => Pop::Empty,
        }
    }

    /// The first events of a new stream (counted in `unread`).
    pub(super) fn start(&self, frames: Vec<Arc<Frame>>, unread: &AtomicUsize) {
        let mut q = self.queue();
        q.count(unread);
        for f in frames {
            q.bytes += f.len;
            q.frames.push_back(f);
        }
        q.joined = true;
        drop(q);
        self.waker.wake();
    }

    /// Queues `frames` when they fit; otherwise drops what waits and queues a
    /// `resync` and a fresh envelope instead. True when it resynchronised
    /// (not counting a resync that replaces one still waiting). The stream
    /// is counted in `unread`.
    pub(super) fn push(
        &self,
        frames: &[Arc<Frame>],
        unread: &AtomicUsize,
        resync: impl FnOnce(usize) -> (Arc<Frame>, Arc<Frame>),
    ) -> bool {
        let mut q = self.queue();
        q.count(unread);
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
        self.waker.wake();
        counted
    }

    /// Queues `frame` only when nothing waits (it never causes a resync).
    pub(super) fn offer(&self, frame: &Arc<Frame>) {
        let mut q = self.queue();
        if !q.frames.is_empty() || q.closed {
            return;
        }
        q.bytes += frame.len;
        q.frames.push_back(Arc::clone(frame));
        drop(q);
        self.waker.wake();
    }

    pub(super) fn close(&self) {
        self.queue().closed = true;
        self.waker.wake();
    }

    /// Wakes the stream (its heartbeat is due).
    pub(super) fn wake(&self) {
        self.waker.wake();
    }

    /// The stream is gone: it no longer counts in `unread`.
    pub(super) fn gone(&self, unread: &AtomicUsize) {
        self.gone.store(true, Ordering::SeqCst);
        self.queue().uncount(unread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(len: usize) -> Arc<Frame> {
        Arc::new(Frame { parts: vec![Bytes::from(vec![b'x'; len])], len })
    }

    #[test]
    fn a_full_queue_resyncs_once_and_a_waiting_resync_takes_the_newest_envelope() {
        let client = Client {
            queue: Mutex::new(Queue { joined: true, ..Queue::default() }),
            waker: AtomicWaker::new(),
            last_event_id: None,
            refreshed: false,
            changes: false,
            gone: AtomicBool::new(false),
            last_write_ms: AtomicU64::new(0),
        };
        let resync = |tag: usize| move |_| (frame(1), frame(tag));
        let unread = AtomicUsize::new(0);
        let big = frame(QUEUE_BYTES / 2 + 1);
        assert!(!client.push(&[Arc::clone(&big)], &unread, resync(10)), "an empty queue takes anything");
        assert!(client.push(&[Arc::clone(&big)], &unread, resync(11)), "past the bound: resync");
        assert_eq!(client.queue().frames.iter().map(|f| f.len).collect::<Vec<_>>(), [1, 11]);
        assert!(!client.push(&[frame(5)], &unread, resync(12)), "a waiting resync is not counted again");
        assert_eq!(client.queue().frames.iter().map(|f| f.len).collect::<Vec<_>>(), [1, 12]);
        assert_eq!(unread.load(Ordering::SeqCst), 1, "a stream counts once however much it was handed");
        assert!(matches!(client.pop(&unread), Pop::Frame(f) if f.len == 1), "the resync goes first");
        assert_eq!(unread.load(Ordering::SeqCst), 1, "the envelope still waits");
        assert!(!client.push(&[frame(5)], &unread, resync(13)), "after the resync went out, events queue again");
        assert_eq!(client.queue().frames.iter().map(|f| f.len).collect::<Vec<_>>(), [12, 5]);
        assert!(client.queue().bytes == 17);
        assert!(matches!(client.pop(&unread), Pop::Frame(f) if f.len == 12));
        assert!(matches!(client.pop(&unread), Pop::Frame(f) if f.len == 5));
        assert_eq!(unread.load(Ordering::SeqCst), 0, "taking the last event uncounts the stream");
        assert!(matches!(client.pop(&unread), Pop::Empty));
        client.push(&[frame(5)], &unread, resync(14));
        client.gone(&unread);
        client.gone(&unread);
        assert_eq!(unread.load(Ordering::SeqCst), 0, "a stream that goes is uncounted, once");
    }
}
