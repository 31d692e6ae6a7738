//! `SectionActor<S>`: owns one section. Refreshes it on its own timer off its
//! own thread, keeps the last good data, and answers `Snapshot` from memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::runtime::clock::Clock;
use crate::runtime::hub::{Hub, SubscriptionId};
use crate::runtime::messages::{SectionReply, Snapshot, Subscribe, Wake};
use crate::runtime::reconcile::{Rebuild, load};
use crate::runtime::replica::{Good, HEARTBEAT, Replica, ReplyState, reply_of};
use crate::runtime::stats::SectionStats;
use crate::runtime::timing::{ActorSettings, refresh_deadline};
use crate::section::{Changes, LoadError, Section, SectionData};
use crate::source::db::{Database, Fingerprint};

/// How long a section waits after a commit woke it before it reads. A
/// writer that commits and then closes (a short-lived process, an
/// orchestrator shutting down) removes the `-wal` and `-shm` as it closes
/// only if no other connection is open at that instant; a read that started
/// on the commit's own event would often be, and leave the `-wal` behind
/// (README, "Replacing the database while the mirror runs"). Measured
/// beside a writer that opens, commits and closes in a loop, with a 1 s
/// period: reading at once left the `-wal` after 35 % of the closes, after
/// 1 ms 29 %, after 3 ms 1 % (what remains is the timer's reads).
pub(crate) const WAKE_GRACE: Duration = Duration::from_millis(3);

/// The actor that owns one section.
pub struct SectionActor<S: Section> {
    section: Arc<S>,
    db: Arc<Database>,
    settings: ActorSettings,
    good: Option<Good<S::Data>>,
    last_error: Option<String>,
    /// When the refresh in flight started; refreshes never overlap.
    in_flight: Option<Instant>,
    /// Sequence numbers and subscribers; outlives this actor.
    hub: Arc<Hub>,
    /// Refresh counters and durations; outlive this actor.
    stats: Arc<SectionStats>,
    /// The database as of the last successful load: equal again means unchanged.
    fingerprint: Option<Fingerprint>,
    /// When the section last derived everything from the database.
    reconciled: Option<Instant>,
    /// Whether a refresh folded in changes since then (else there is nothing to reconcile).
    folded: bool,
    /// Where requests read this section without a message; outlives this actor.
    replica: Arc<Replica<S::Data>>,
    /// Whether the heartbeat is running.
    beating: bool,
    /// When the last refresh that ran the section's queries started: the
    /// coalescing gap counts from it. (A refresh that found the database
    /// unchanged cost one reading of the WAL index and does not count.)
    last_load: Option<Instant>,
    /// The next refresh on the timer, and when it is due.
    next: Option<(SpawnHandle, Instant)>,
    /// A commit woke the section while a refresh was running: look again
    /// when it ends (after the coalescing gap), not a period later.
    woken: bool,
}

/// What a refresh produced.
enum Refreshed<D> {
    /// The queries ran.
    Loaded(D, Fingerprint, Rebuild),
    /// The database was unchanged; `Some` when the section re-sampled what moves on its own.
    Unchanged(Option<D>, Fingerprint),
}

impl<S: Section> SectionActor<S> {
    /// A new actor for `section` reading `db`.
    #[cfg(any(test, feature = "test-util"))]
    pub fn new(section: Arc<S>, db: Arc<Database>, settings: ActorSettings) -> Self {
        let replica = Arc::new(Replica::new(settings.clone()));
        Self::with_shared(section, db, settings, Arc::new(Hub::new(S::NAME)), Arc::default(), replica)
    }

    pub(crate) fn with_shared(
        section: Arc<S>,
        db: Arc<Database>,
        settings: ActorSettings,
        hub: Arc<Hub>,
        stats: Arc<SectionStats>,
        replica: Arc<Replica<S::Data>>,
    ) -> Self {
        Self {
            section,
            db,
            settings,
            good: None,
            last_error: None,
            in_flight: None,
            hub,
            stats,
            fingerprint: None,
            reconciled: None,
            folded: false,
            replica,
            beating: false,
            last_load: None,
            next: None,
            woken: false,
        }
    }

    /// Runs the next refresh after `delay`, instead of whatever was due.
    fn schedule(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        if let Some((handle, _)) = self.next.take() {
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(delay, |act, ctx| {
            act.next = None;
            act.refresh(ctx);
        });
        self.next = Some((handle, Instant::now() + delay));
    }

    /// When a refresh that a commit woke may start: after [`WAKE_GRACE`],
    /// the coalescing gap since the last load, and whatever the CPU budget
    /// asks (never more than the period).
    fn woken_due(&self, now: Instant) -> Instant {
        let gap = self.last_load.map_or(now, |at| at + self.settings.coalesce).max(now + WAKE_GRACE);
        gap.max(now + self.settings.budget.wait(self.settings.period))
    }

    /// A commit: refresh after [`WAKE_GRACE`], or when the coalescing gap
    /// since the last refresh's start has passed, or after the running one
    /// (never more than one refresh per gap, however many commits come).
    fn woken(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight.is_some() {
            self.woken = true;
            return;
        }
        let now = Instant::now();
        let due = self.woken_due(now);
        if self.next.is_none_or(|(_, at)| at > due) {
            self.schedule(ctx, due - now);
        }
    }

    /// Copies the reply state to the replica (after every change of it).
    fn publish_state(&self) {
        let state = ReplyState {
            good: self.good.clone(),
            last_error: self.last_error.clone(),
            in_flight: self.in_flight,
            seq: self.hub.seq(),
        };
        self.replica.publish(state);
    }

    /// Tells the replica this actor is alive, every [`HEARTBEAT`] while
    /// requests read it; stops when nobody has for [`HEARTBEAT_IDLE`].
    fn beat(&mut self, ctx: &mut Context<Self>) {
        self.replica.beat();
        if self.replica.read_recently() {
            ctx.run_later(HEARTBEAT, |act, ctx| act.beat(ctx));
        } else {
            self.beating = false;
        }
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight.is_some() {
            return;
        }
        let reconcile_due = self.folded && self.reconciled.is_some_and(|at| at.elapsed() >= self.settings.reconcile);
        self.in_flight = Some(Instant::now());
        self.publish_state();
        self.hub.prune();
        let section = Arc::clone(&self.section);
        let db = Arc::clone(&self.db);
        let deadline = refresh_deadline(self.settings.period);
        let seen = self.fingerprint;
        let last = self.fingerprint.zip(self.good.as_ref().map(|g| Arc::clone(&g.data)));
        let work = actix_web::rt::task::spawn_blocking(move || {
            // Nothing was committed since the last load: skip the connection and
            // the queries (unless a reconciliation is due: a history edit may hide
            // behind the last load).
            if let Some((seen, data)) = &last
                && !reconcile_due
                && db.unchanged_since(seen)
            {
                return Ok(Refreshed::Unchanged(section.resample(data), *seen));
            }
            db.with_conn(deadline, |conn, fingerprint| {
                let changes = seen.map_or(Changes::Unknown, |seen| db.changes_since(&seen, &fingerprint));
                let (data, rebuild) = load(&*section, conn, seen, fingerprint, &changes, reconcile_due)?;
                Ok(Refreshed::Loaded(data, fingerprint, rebuild))
            })
        });
        ctx.spawn(work.into_actor(self).map(|joined, act, ctx| {
            let started = act.in_flight.take();
            let result = joined.unwrap_or_else(|e| {
                // A refresh that panicked may have left its state half-updated.
                act.section.forget();
                Err(LoadError::Other(panic_message(e)))
            });
            if matches!(result, Ok(Refreshed::Loaded(..))) {
                act.last_load = started;
            }
            act.finish(result, started);
            act.publish_state();
            act.schedule_next(ctx);
        }));
    }

    /// Schedules the refresh after the one that just ended. It is scheduled
    /// from the end of this one, so a slow refresh stretches the cadence
    /// instead of piling up ticks; a commit seen meanwhile is looked at once
    /// the gap allows.
    fn schedule_next(&mut self, ctx: &mut Context<Self>) {
        let delay = if std::mem::take(&mut self.woken) {
            self.woken_due(Instant::now()).saturating_duration_since(Instant::now())
        } else {
            self.settings.period
        };
        self.schedule(ctx, delay);
    }

    fn finish(&mut self, result: Result<Refreshed<S::Data>, LoadError>, started: Option<Instant>) {
        let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
        self.stats.durations.observe(elapsed.as_secs_f64());
        let elapsed_ms = elapsed.as_millis();
        match result {
            Ok(Refreshed::Loaded(data, fingerprint, rebuild)) => {
                self.fingerprint = Some(fingerprint);
                self.rebuilt(rebuild);
                self.stats.loaded.fetch_add(1, Ordering::Relaxed);
                self.accept(Some(data), elapsed_ms);
            }
            Ok(Refreshed::Unchanged(resampled, fingerprint)) => {
                self.fingerprint = Some(fingerprint);
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                self.accept(resampled, elapsed_ms);
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let msg = e.to_string();
                // Logged once per change of error, not once per tick.
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(section = %S::NAME, elapsed_ms, error = %msg, "refresh failed");
                } else {
                    tracing::debug!(section = %S::NAME, elapsed_ms, error = %msg, "refresh failed again");
                }
                self.last_error = Some(msg);
            }
        }
    }

    /// Notes a refresh that derived everything again, and any drift it found.
    fn rebuilt(&mut self, rebuild: Rebuild) {
        if matches!(rebuild, Rebuild::No) {
            self.folded = true;
            return;
        }
        self.folded = false;
        self.reconciled = Some(Instant::now());
        self.stats.reconciled(Utc::now());
        if let Rebuild::Reconciled(Some(difference)) = rebuild {
            self.stats.drift.fetch_add(1, Ordering::Relaxed);
            // Once per drift found: each one is a history edit the fast path could not see.
            tracing::warn!(section = %S::NAME, %difference, "reconciliation found served values that were wrong");
        }
    }

    /// A successful refresh: `data` is new data, or `None` when the current data stands.
    fn accept(&mut self, data: Option<S::Data>, elapsed_ms: u128) {
        if self.last_error.take().is_some() {
            tracing::info!(section = %S::NAME, elapsed_ms, "refresh recovered");
        }
        let (data, changed) = match (data, &self.good) {
            (Some(new), Some(g)) if *g.data == new => (Arc::clone(&g.data), false),
            (Some(new), _) => (Arc::new(new), true),
            (None, Some(g)) => (Arc::clone(&g.data), false),
            (None, None) => return,
        };
        tracing::debug!(section = %S::NAME, elapsed_ms, changed, "refreshed");
        // Kept to the millisecond it is served with, so that `age_ms` is
        // the served clock's millisecond minus this one, exactly.
        let now = Utc::now();
        let at = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        self.good = Some(Good { data, at });
        // Subscribers hear of changes only; an unchanged refresh sends nothing.
        if changed {
            let seq = self.hub.next_seq();
            // The replica first: a subscriber that asks for the envelope as
            // soon as it hears of a change must find the change there.
            self.publish_state();
            if self.hub.has_subscribers() {
                self.publish(seq, None);
            }
        }
    }

    /// Sends the current data (as sequence `seq`) to every subscriber, or to one.
    fn publish(&self, seq: u64, only: Option<SubscriptionId>) {
        if let Some(good) = &self.good {
            self.hub.publish(seq, good.at, || SectionData::render::<S>(&good.data, good.at), only);
        }
    }

    /// The section's state right now.
    fn reply(&self) -> SectionReply<S::Data> {
        reply_of(
            self.good.as_ref(),
            self.last_error.as_deref(),
            self.in_flight,
            &self.settings,
            self.hub.seq(),
            Clock::now(),
        )
    }
}

impl<S: Section> Actor for SectionActor<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.refresh(ctx);
    }
}

impl<S: Section> Handler<Subscribe> for SectionActor<S> {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        self.hub.add(msg.id, msg.listener);
        // Sent from the actor's own thread, so it cannot overtake a later update.
        self.publish(self.hub.seq(), Some(msg.id));
    }
}

impl<S: Section> Handler<Wake> for SectionActor<S> {
    type Result = ();

    fn handle(&mut self, msg: Wake, ctx: &mut Self::Context) {
        // Cleared first: a commit from now on sends another wake-up.
        msg.0.store(false, Ordering::SeqCst);
        self.woken(ctx);
    }
}

impl<S: Section> Handler<Snapshot<S::Data>> for SectionActor<S> {
    type Result = MessageResult<Snapshot<S::Data>>;

    fn handle(&mut self, _: Snapshot<S::Data>, ctx: &mut Self::Context) -> Self::Result {
        // Someone reads this section: beat, so the next requests can read the replica.
        if !self.beating {
            self.beating = true;
            self.replica.touch();
            self.beat(ctx);
        }
        MessageResult(self.reply())
    }
}

/// A stable description of a refresh that panicked (the join error's own text
/// names the task, which would defeat "log once per change").
fn panic_message(e: actix_web::rt::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic".to_owned());
            format!("refresh panicked: {what}")
        }
        Err(e) => format!("refresh did not complete: {e}"),
    }
}
