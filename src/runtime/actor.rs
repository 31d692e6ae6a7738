//! `SectionActor<S>`: owns one section. Refreshes it on its own timer off its
//! own thread, keeps the last good data, and answers `Snapshot` from memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::runtime::hub::{Hub, SubscriptionId, Update};
use crate::runtime::messages::{SectionReply, Snapshot, Subscribe, Wake};
use crate::runtime::stats::SectionStats;
use crate::section::Status;
use crate::section::{Changes, LoadError, Section, SectionData};
use crate::source::db::{Database, Fingerprint};

/// The longest a single refresh may run before its statement is interrupted.
pub const MAX_REFRESH_TIME: Duration = Duration::from_secs(60);
/// The shortest such bound, so a short period does not starve a slow database.
pub const MIN_REFRESH_TIME: Duration = Duration::from_secs(5);

/// How long one refresh may take: twice the period, within
/// [`MIN_REFRESH_TIME`] ..= [`MAX_REFRESH_TIME`]. A refresh still running
/// after its period plus this bound makes the section `stale`.
pub fn refresh_deadline(period: Duration) -> Duration {
    (period * 2).clamp(MIN_REFRESH_TIME, MAX_REFRESH_TIME)
}

/// How long a section waits after a commit woke it before it reads. A
/// writer that commits and then closes (a short-lived process, an
/// orchestrator shutting down) removes the `-wal` and `-shm` as it closes
/// only if no other connection is open at that instant; a read that started
/// on the commit's own event would often be, and leave the `-wal` behind
/// (README, "Replacing the database while the mirror runs"). Measured
/// beside a writer that opens, commits and closes in a loop, with a 1 s
/// period: reading at once left the `-wal` after 35 % of the closes, after
/// 1 ms 29 %, after 3 ms 1 % (what remains is the timer's reads).
pub const WAKE_GRACE: Duration = Duration::from_millis(3);

/// Timing and staleness parameters of one section actor.
#[derive(Debug, Clone)]
pub struct ActorSettings {
    /// Time between the end of one refresh and the start of the next.
    pub period: Duration,
    /// How old last-good data may be and still be served.
    pub max_stale: Duration,
    /// The longest the section goes without deriving everything from the
    /// database again (`ORCH_RECONCILE_MS`).
    pub reconcile: Duration,
    /// The shortest time between the starts of two refreshes that commits
    /// woke (`ORCH_COALESCE_MS`).
    pub coalesce: Duration,
    /// The mirror's CPU budget, shared with its other sections: while it is
    /// overdrawn a woken refresh waits (at most `period`).
    pub budget: Arc<crate::runtime::budget::Budget>,
}

struct Good<D> {
    data: Arc<D>,
    at: DateTime<Utc>,
}

impl<D> Clone for Good<D> {
    fn clone(&self) -> Self {
        Self { data: Arc::clone(&self.data), at: self.at }
    }
}

/// How often an owner that is being read tells its replica it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(20);
/// The oldest heartbeat a replica trusts (at most half the snapshot timeout):
/// past it the owner may be stalled, and a request asks the owner itself.
pub const TRUSTED_HEARTBEAT_AGE: Duration = Duration::from_millis(50);
/// An owner stops its heartbeat when no request read its replica for this long.
pub const HEARTBEAT_IDLE: Duration = Duration::from_secs(5);

/// What a section's state is computed from, as its owner last published it.
struct ReplyState<D> {
    good: Option<Good<D>>,
    last_error: Option<String>,
    in_flight: Option<Instant>,
    seq: u64,
}

impl<D> Clone for ReplyState<D> {
    fn clone(&self) -> Self {
        Self { good: self.good.clone(), last_error: self.last_error.clone(), in_flight: self.in_flight, seq: self.seq }
    }
}

/// A copy of a section actor's reply state that requests read without
/// sending it a message, while the actor shows it is alive (README,
/// "The envelope": the statuses are computed from it exactly as the actor computes
/// them). The actor publishes to it whenever its state changes and beats a
/// heartbeat while requests read it; a request that finds the heartbeat
/// older than [`TRUSTED_HEARTBEAT_AGE`] asks the actor with a `Snapshot` and
/// the snapshot timeout instead, so a stalled actor still shows `timeout`.
pub struct Replica<D> {
    state: std::sync::RwLock<Option<ReplyState<D>>>,
    settings: ActorSettings,
    base: Instant,
    /// Milliseconds after `base` of the owner's last heartbeat (0: none yet).
    beat_ms: std::sync::atomic::AtomicU64,
    /// Milliseconds after `base` of the last read.
    read_ms: std::sync::atomic::AtomicU64,
}

impl<D> Replica<D> {
    /// An empty replica of an actor with `settings`.
    pub fn new(settings: ActorSettings) -> Self {
        Self {
            state: std::sync::RwLock::new(None),
            settings,
            base: Instant::now(),
            beat_ms: Default::default(),
            read_ms: Default::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn publish(&self, state: ReplyState<D>) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }

    fn beat(&self) {
        self.beat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn touch(&self) {
        self.read_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds after `base` at `now` (at least 1: 0 means "never").
    fn ms_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn read_recently(&self) -> bool {
        let read = self.read_ms.load(Ordering::Relaxed);
        read != 0 && self.now_ms().saturating_sub(read) < HEARTBEAT_IDLE.as_millis() as u64
    }

    /// The section's reply at `now`, when the owner beat within `trust`;
    /// `None` means ask the owner.
    pub fn read(&self, trust: Duration, now: Now) -> Option<SectionReply<D>> {
        let now_ms = self.ms_at(now.instant);
        // Marks it read; written only when the millisecond moved, so that
        // requests on several threads do not all write one cache line.
        if self.read_ms.load(Ordering::Relaxed) != now_ms {
            self.read_ms.store(now_ms, Ordering::Relaxed);
        }
        let beat = self.beat_ms.load(Ordering::Relaxed);
        if beat == 0 || now_ms.saturating_sub(beat) > trust.as_millis() as u64 {
            return None;
        }
        let settings = &self.settings;
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let state = state.as_ref()?;
        Some(reply_of(state.good.as_ref(), state.last_error.as_deref(), state.in_flight, settings, state.seq, now))
    }
}

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

/// Whether a refresh derived everything from the database again.
enum Rebuild {
    /// No: the section folded in what changed.
    No,
    /// Yes, because the file, connection or schema changed (or it was the first).
    Detected,
    /// Yes, because `ORCH_RECONCILE_MS` had passed; `Some` says how the
    /// incremental value differed from the full one.
    Reconciled(Option<String>),
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
            let data = SectionData::render::<S>(&good.data, good.at);
            let update = Update { section: S::NAME, seq, refreshed_at: good.at, data };
            self.hub.publish(&update, only);
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
            Now::read(),
        )
    }
}

/// One reading of both clocks, shared by every section a request reads.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For durations (a refresh's running time, a heartbeat's age).
    pub instant: Instant,
    /// For ages of data.
    pub utc: chrono::DateTime<Utc>,
}

impl Now {
    /// Both clocks, now.
    pub fn read() -> Self {
        Self { instant: Instant::now(), utc: Utc::now() }
    }
}

/// A section's reply from its state at `now` (the actor and its replica alike).
fn reply_of<D>(
    good: Option<&Good<D>>,
    last_error: Option<&str>,
    in_flight: Option<Instant>,
    settings: &ActorSettings,
    seq: u64,
    now: Now,
) -> SectionReply<D> {
    let running = |started: Instant| now.instant.saturating_duration_since(started);
    let overdue = in_flight.filter(|started| running(*started) > settings.period + refresh_deadline(settings.period));
    let problem = match (last_error, overdue) {
        (Some(e), _) => Some(e.to_owned()),
        (None, Some(started)) => Some(format!("refresh overdue: running for {} ms", running(started).as_millis())),
        (None, None) => None,
    };
    let now = now.utc;
    let Some(good) = good else {
        let status = if problem.is_some() { Status::Error } else { Status::Pending };
        return SectionReply { status, data: None, refreshed_at: None, error: problem, seq };
    };
    let (status, data, error) = match problem {
        None => (Status::Ok, Some(Arc::clone(&good.data)), None),
        Some(e) => {
            let age = (now - good.at).to_std().unwrap_or_default();
            if age <= settings.max_stale {
                (Status::Stale, Some(Arc::clone(&good.data)), Some(e))
            } else {
                let e = format!(
                    "{e}; last good data is {} ms old, beyond ORCH_MAX_STALE_MS ({} ms)",
                    age.as_millis(),
                    settings.max_stale.as_millis()
                );
                (Status::Error, None, Some(e))
            }
        }
    };
    SectionReply { status, data, refreshed_at: Some(good.at), error, seq }
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
        self.hub.add(msg.id, msg.recipient);
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

/// One loading refresh: the section's incremental path (told which rows the
/// commits since the last load can have touched), or everything again
/// when the source changed under it (`seen` is the fingerprint of the last
/// load) or a reconciliation is due. A reconciliation runs both on this one
/// read snapshot and compares them.
fn load<S: Section>(
    section: &S,
    conn: &rusqlite::Connection,
    seen: Option<Fingerprint>,
    now: Fingerprint,
    changes: &Changes,
    reconcile_due: bool,
) -> Result<(S::Data, Rebuild), LoadError> {
    if !seen.is_some_and(|s| s.same_source(&now)) {
        section.forget();
        return Ok((section.refresh(conn)?, Rebuild::Detected));
    }
    if !reconcile_due {
        return Ok((section.refresh_since(conn, changes)?, Rebuild::No));
    }
    let fast = section.refresh_since(conn, changes)?;
    section.forget();
    let full = section.refresh(conn)?;
    let drift = (fast != full).then(|| first_difference(&format!("{fast:?}"), &format!("{full:?}")));
    Ok((full, Rebuild::Reconciled(drift)))
}

/// Where two debug renderings first differ, with a little context from each.
fn first_difference(served: &str, full: &str) -> String {
    let at = served.bytes().zip(full.bytes()).take_while(|(a, b)| a == b).count();
    let around = |s: &str| {
        let start = s.floor_char_boundary(at.saturating_sub(40));
        let end = s.ceil_char_boundary((at + 80).min(s.len()));
        s[start..end].to_owned()
    };
    format!("served …{}… but the database gives …{}…", around(served), around(full))
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
