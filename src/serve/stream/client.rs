//! One stream's bounded queue and its resync policy: the broker never waits
//! for a stream; when an event does not fit, what waits is dropped and
//! replaced by one `resync` event and a fresh envelope.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::frame::Frame;

/// The most bytes of events one stream may have waiting (at least one event
/// always fits); past it the stream is resynchronised.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// The most events one stream may have waiting.
pub const QUEUE_EVENTS: usize = 1024;

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
}

/// One open stream, as the broker sees it.
pub(super) struct Client {
    pub(super) queue: Mutex<Queue>,
    pub(super) notify: Notify,
    /// `Last-Event-ID`, if the client sent one.
    pub(super) last_event_id: Option<String>,
    /// The client asked for `refreshed` events.
    pub(super) refreshed: bool,
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

    pub(super) fn pop(&self) -> Pop {
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
    pub(super) fn start(&self, frames: Vec<Arc<Frame>>) {
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
    pub(super) fn push(&self, frames: &[Arc<Frame>], resync: impl FnOnce(usize) -> (Arc<Frame>, Arc<Frame>)) -> bool {
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
    pub(super) fn offer(&self, frame: &Arc<Frame>) {
        let mut q = self.queue();
        if !q.frames.is_empty() || q.closed {
            return;
        }
        q.bytes += frame.len;
        q.frames.push_back(Arc::clone(frame));
        drop(q);
        self.notify.notify_one();
    }

    pub(super) fn close(&self) {
        self.queue().closed = true;
        self.notify.notify_one();
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
            notify: Notify::new(),
            last_event_id: None,
            refreshed: false,
            gone: AtomicBool::new(false),
            last_write_ms: AtomicU64::new(0),
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
