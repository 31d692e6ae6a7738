//! Subscriptions and the worker probe, through the public library API only.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;
use orchmirror::Update;
use orchmirror::section::Queue;
use orchmirror::{MirrorHandle, SectionName};
use orchmirror::{ProbeResult, WorkerProbe};
use serde_json::json;
use support::{Fixture, fast_settings, wait_until};

type Log = Arc<Mutex<Vec<(Instant, chrono::DateTime<Utc>, Update)>>>;

/// Records every update with when it arrived; optionally sleeps in its handler.
struct Collector {
    log: Log,
    sleep: Duration,
    capacity: usize,
}

impl Actor for Collector {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.capacity);
    }
}

impl Handler<Update> for Collector {
    type Result = ();
    fn handle(&mut self, u: Update, _: &mut Self::Context) {
        self.log.lock().expect("log").push((Instant::now(), Utc::now(), u));
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
    }
}

fn collector(sleep: Duration, capacity: usize) -> (Addr<Collector>, Log) {
    let log: Log = Arc::default();
    let l = Arc::clone(&log);
    // Its own arbiter: a sleeping subscriber must not block anything else.
    let addr = Collector::start_in_arbiter(&Arbiter::new().handle(), move |_| Collector { log: l, sleep, capacity });
    (addr, log)
}

fn depth(u: &Update) -> u64 {
    match u.data.get::<Queue>() {
        Some(q) => q.depth,
        None => panic!("not a queue update: {:?}", u.data),
    }
}

async fn ready(handle: &MirrorHandle) {
    wait_until("every section ok", Duration::from_secs(10), async || {
        let e = handle.snapshot().await.expect("enabled");
        e.sections.iter().all(|(_, s)| s.status == orchmirror::Status::Ok)
    })
    .await;
}

fn queue_job(fx: &Fixture) {
    fx.exec("INSERT INTO jobs (agent, status, created_at) VALUES ('dev', 'queued', datetime('now'));");
}

#[test]
fn initial_value_then_one_update_per_change_and_none_without_change() {
    let fx = Fixture::new();
    let settings = fast_settings(&fx.path);
    System::new().block_on(async move {
        let handle = MirrorHandle::start(&settings).expect("start");
        ready(&handle).await;
        let (sub, log) = collector(Duration::ZERO, 16);
        let id = handle.subscribe(SectionName::QUEUE, sub.recipient()).expect("subscribed");
        wait_until("initial value", Duration::from_secs(5), async || log.lock().expect("log").len() == 1).await;
        let first_seq = {
            let l = log.lock().expect("log");
            assert_eq!(l[0].2.section, SectionName::QUEUE);
            assert_eq!(depth(&l[0].2), 0);
            l[0].2.seq
        };
        assert!(first_seq >= 1);

        // Ten refresh periods with no change: nothing more arrives.
        actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(log.lock().expect("log").len(), 1, "no update without a change");

        for n in 1..=3u64 {
            queue_job(&fx);
            wait_until("an update", Duration::from_secs(5), async || log.lock().expect("log").len() as u64 == 1 + n)
                .await;
            actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        }
        let l = log.lock().expect("log");
        assert_eq!(l.len(), 4, "exactly one update per change");
        let seqs: Vec<u64> = l.iter().map(|e| e.2.seq).collect();
        assert_eq!(seqs, (first_seq..first_seq + 4).collect::<Vec<_>>(), "consecutive sequence numbers");
        assert_eq!(l.iter().map(|e| depth(&e.2)).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        let stats = handle.subscriptions();
        assert_eq!(stats.len(), 1);
        assert_eq!((stats[0].id, stats[0].delivered, stats[0].dropped), (id, 4, 0));
    });
}

#[test]
fn a_slow_subscriber_delays_neither_metrics_nor_another_subscriber() {
    let fx = Fixture::new();
    let mut settings = fast_settings(&fx.path);
    let period = Duration::from_millis(200);
    settings.refresh = orchmirror::RefreshPeriods::uniform(period);
    System::new().block_on(async move {
        let handle = MirrorHandle::start(&settings).expect("start");
        ready(&handle).await;
        // Sleeps 1 s per update with a one-message mailbox: it falls behind.
        let (slow, slow_log) = collector(Duration::from_secs(1), 1);
        let (fast, fast_log) = collector(Duration::ZERO, 16);
        handle.subscribe(SectionName::QUEUE, slow.recipient()).expect("slow");
        handle.subscribe(SectionName::QUEUE, fast.recipient()).expect("fast");
        let mut worst_snapshot = Duration::ZERO;
        for _ in 0..10 {
            queue_job(&fx);
            actix_web::rt::time::sleep(period + Duration::from_millis(100)).await;
            let t = Instant::now();
            let e = handle.snapshot().await.expect("enabled");
            worst_snapshot = worst_snapshot.max(t.elapsed());
            assert_eq!(e.sections[SectionName::QUEUE].status, orchmirror::Status::Ok);
        }
        wait_until("fast subscriber saw depth 10", Duration::from_secs(5), async || {
            fast_log.lock().expect("log").last().is_some_and(|e| depth(&e.2) == 10)
        })
        .await;
        let fast_log = fast_log.lock().expect("log");
        let seqs: Vec<u64> = fast_log.iter().map(|e| e.2.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "the fast subscriber missed nothing: {seqs:?}");
        // Delivery delay: from the refresh to the fast subscriber's handler.
        let worst_delay = fast_log
            .iter()
            .skip(1)
            .map(|(_, got, u)| (*got - u.refreshed_at).to_std().unwrap_or_default())
            .max()
            .unwrap_or_default();
        assert!(worst_delay < period, "fast subscriber delay {worst_delay:?} >= refresh period {period:?}");
        assert!(worst_snapshot < Duration::from_secs(1), "snapshot took {worst_snapshot:?}");
        let slow_stats = handle.subscriptions().into_iter().find(|s| s.dropped > 0);
        assert!(slow_stats.is_some(), "the slow subscriber's drops are counted: {:?}", handle.subscriptions());
        let slow_seqs: Vec<u64> = slow_log.lock().expect("log").iter().map(|e| e.2.seq).collect();
        assert!(slow_seqs.windows(2).any(|w| w[1] > w[0] + 1), "gaps show in the slow subscriber's seq: {slow_seqs:?}");
        let totals = handle.subscriber_totals();
        assert!(totals[SectionName::QUEUE].dropped > 0 && totals[SectionName::QUEUE].subscribers == 2, "{totals:?}");
    });
}

#[test]
fn stopped_subscribers_are_removed_and_unsubscribe_ends_delivery() {
    let fx = Fixture::new();
    let settings = fast_settings(&fx.path);
    System::new().block_on(async move {
        let handle = MirrorHandle::start(&settings).expect("start");
        ready(&handle).await;
        let (gone, _) = collector(Duration::ZERO, 16);
        let (leaving, leaving_log) = collector(Duration::ZERO, 16);
        let ids = handle.subscribe_all(gone.clone().recipient());
        assert_eq!(ids.len(), 4);
        let leave_id = handle.subscribe(SectionName::QUEUE, leaving.recipient()).expect("sub");
        wait_until("5 subscriptions", Duration::from_secs(5), async || handle.subscriptions().len() == 5).await;

        // Stop the first subscriber's actor: it disappears from every section.
        gone.do_send(StopNow);
        wait_until("removal of a stopped subscriber", Duration::from_secs(5), async || {
            handle.subscriptions().iter().all(|s| s.id == leave_id)
        })
        .await;

        assert!(handle.unsubscribe(leave_id));
        assert!(!handle.unsubscribe(leave_id), "already gone");
        let before = leaving_log.lock().expect("log").len();
        queue_job(&fx);
        actix_web::rt::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(leaving_log.lock().expect("log").len(), before, "no delivery after unsubscribe");
        assert!(handle.subscriptions().is_empty());
    });
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopNow;

impl Handler<StopNow> for Collector {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A fake worker: a breaker snapshot, a failing `max_concurrency`, and a
/// `poll_interval` that answers only after `delay`.
struct FakeWorker {
    delay: Duration,
}

impl WorkerProbe for FakeWorker {
    fn breaker(&self) -> LocalBoxFuture<'static, ProbeResult> {
        async { Ok(json!({"state": "closed", "failures": 2})) }.boxed_local()
    }
    fn max_concurrency(&self) -> LocalBoxFuture<'static, ProbeResult> {
        async { Err("worker not ready".to_owned()) }.boxed_local()
    }
    fn poll_interval(&self) -> LocalBoxFuture<'static, ProbeResult> {
        let delay = self.delay;
        async move {
            actix_web::rt::time::sleep(delay).await;
            Ok(json!(2.5))
        }
        .boxed_local()
    }
}

fn probe_run(delay: Duration) -> serde_json::Value {
    let fx = Fixture::new();
    let settings = fast_settings(&fx.path);
    System::new().block_on(async move {
        let handle = MirrorHandle::builder(settings)
            .worker_probe(FakeWorker { delay })
            .probe_timeout(Duration::from_millis(100))
            .start()
            .expect("start");
        let start = Instant::now();
        loop {
            let e = handle.snapshot().await.expect("enabled");
            if let Some(q) = e.queue()
                && q.breaker.is_some()
            {
                // One more period so every field has been read at least once.
                actix_web::rt::time::sleep(Duration::from_millis(300)).await;
                let e = handle.snapshot().await.expect("enabled");
                return serde_json::to_value(e.queue()).expect("json");
            }
            assert!(start.elapsed() < Duration::from_secs(10), "probe values never arrived");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[test]
fn probe_fields_come_from_the_probe_and_are_null_when_it_fails_or_is_slow() {
    let quick = probe_run(Duration::from_millis(1));
    assert_eq!(quick["breaker"], json!({"state": "closed", "failures": 2}));
    assert_eq!(quick["max_concurrency"], serde_json::Value::Null, "a failing read is null");
    assert_eq!(quick["poll_interval"], json!(2.5));

    let slow = probe_run(Duration::from_secs(2));
    assert_eq!(slow["breaker"], json!({"state": "closed", "failures": 2}), "the other fields are unaffected");
    assert_eq!(slow["poll_interval"], serde_json::Value::Null, "a read past its timeout is null");
}
