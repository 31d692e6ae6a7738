//! The cheap `Clone` handle through which HTTP handlers and host code read a
//! running mirror: snapshots, subscriptions, counters, stopping.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;

use super::supervision::{OwnerControl, Owners, trusted_age};
use crate::runtime::budget::Budget;
use crate::runtime::clock::Clock;
use crate::runtime::hub::{Listener, SubscriberTotals, SubscriptionId, SubscriptionStats, Update};
use crate::runtime::messages::Answer;
use crate::runtime::rendered::RenderCache;
use crate::runtime::stats::{DurationFamily, PerSection, Reconciliation, RefreshCounters, Restarts};
use crate::section::SectionName;
use crate::source::commits::{CommitWatch, WakeMode};

pub(super) struct Inner {
    /// Tells mirrors apart (per-thread caches are keyed by it).
    pub(super) id: u64,
    /// Tells this mirror apart from every other, in any process and before
    /// or after a restart (random): validators such as the ETag include it.
    pub(super) instance: u64,
    pub(super) snapshot_timeout: Duration,
    /// The shortest refresh period of any section.
    pub(super) shortest_period: Duration,
    pub(super) render_cache: RenderCache,
    pub(super) owners: Option<Owners>,
    /// The watch on the database's files that wakes the sections on a commit.
    pub(super) commits: Option<CommitWatch>,
    pub(super) durations: DurationFamily,
    /// The CPU budget the section actors share.
    pub(super) budget: Arc<Budget>,
    pub(super) stopping: AtomicBool,
    /// Tells whoever serves from this mirror (the stream broker) that it stopped.
    pub(super) stopped: tokio::sync::watch::Sender<bool>,
    pub(super) next_subscription: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stopped.send_replace(true);
        if let Some(owners) = &self.owners {
            owners.iter().for_each(|o| o.stop());
        }
    }
}

/// A running mirror. Cloning is cheap; the actors stop when the last clone is
/// dropped or [`MirrorHandle::stop`] is called.
#[derive(Clone)]
pub struct MirrorHandle {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for MirrorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorHandle").field("enabled", &self.enabled()).finish()
    }
}

impl MirrorHandle {
    /// False when the kill switch is off: no actors, no database.
    pub fn enabled(&self) -> bool {
        self.inner.owners.is_some()
    }

    /// How long a response waits for each section actor (`ORCH_SNAPSHOT_TIMEOUT_MS`).
    pub fn snapshot_timeout(&self) -> Duration {
        self.inner.snapshot_timeout
    }

    /// This mirror's identity within the process.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// A random number that no other mirror, in this process or another,
    /// before or after a restart, shares (for validators such as the ETag).
    pub(crate) fn instance(&self) -> u64 {
        self.inner.instance
    }

    /// The shortest refresh period of any section.
    pub(crate) fn shortest_period(&self) -> Duration {
        self.inner.shortest_period
    }

    /// Resolves once the mirror is stopped ([`MirrorHandle::stop`], or its
    /// last handle dropped); at once if it already is. It does not keep the
    /// mirror running.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.inner.stopped.subscribe();
        async move {
            // An error means the mirror is gone: stopped too.
            let _ = stopped.wait_for(|s| *s).await;
        }
    }

    /// Whether [`MirrorHandle::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// A handle that does not keep the mirror running.
    pub(crate) fn downgrade(&self) -> WeakMirrorHandle {
        WeakMirrorHandle(Arc::downgrade(&self.inner))
    }

    /// The latest rendering of each section, shared by every response.
    pub(crate) fn render_cache(&self) -> &RenderCache {
        &self.inner.render_cache
    }

    /// Every section actor's answer, in envelope order; `None` when disabled.
    pub(crate) async fn answers(&self) -> Option<Vec<Answer>> {
        let owners = self.inner.owners.as_ref()?;
        let t = self.inner.snapshot_timeout;
        // Every replica read in place, with one reading of the clocks; from
        // the first that cannot be (its actor is stalled, dead or not read
        // lately), the rest are asked.
        let (trust, now) = (trusted_age(t), Clock::now());
        let mut answers = Vec::with_capacity(owners.0.len());
        for owner in owners.iter() {
            match owner.read_replica(trust, now) {
                Some(answer) => answers.push(answer),
                None => break,
            }
        }
        let read = answers.len();
        if read < owners.0.len() {
            answers.extend(futures_util::future::join_all(owners.iter().skip(read).map(|o| o.ask(t))).await);
        }
        Some(answers)
    }

    /// The registered sections, in envelope order (empty when disabled).
    pub fn sections(&self) -> Vec<SectionName> {
        self.inner.owners.iter().flat_map(|o| o.iter().map(|o| o.name())).collect()
    }

    /// How often each section's actor was found dead and re-spawned.
    pub fn restarts(&self) -> Restarts {
        self.per_section(|o| o.restarts())
    }

    /// Loaded, skipped (database unchanged) and failed refreshes, per section.
    pub fn refresh_counters(&self) -> PerSection<RefreshCounters> {
        self.per_section(|o| o.stats().counters())
    }

    /// Each section's last full recomputation and the drift reconciliations found.
    pub fn reconciliations(&self) -> PerSection<Reconciliation> {
        self.per_section(|o| o.stats().reconciliation())
    }

    /// Snapshot requests each section's actor did not answer within the timeout.
    pub(crate) fn snapshot_timeouts(&self) -> PerSection<u64> {
        self.per_section(|o| o.stats().timeouts.load(Ordering::Relaxed))
    }

    /// The CPU budget: its share of one core, whether it sets the gap
    /// between refreshes now, and how many refreshes it delayed.
    pub fn budget(&self) -> BudgetState {
        let b = &self.inner.budget;
        BudgetState { percent: b.percent(), limiting: b.limiting(), delays: b.delays() }
    }

    /// Refresh durations per section (a `section`-labelled histogram family); `None` when disabled.
    pub(crate) fn refresh_durations(&self) -> Option<DurationFamily> {
        self.inner.owners.as_ref().map(|_| self.inner.durations.clone())
    }

    /// How each section learns that it should look at the database: woken by
    /// commits (a watch on the database's files), or by its timer alone, and why.
    pub fn wake_modes(&self) -> PerSection<WakeMode> {
        let mode = self.inner.commits.as_ref().map(CommitWatch::mode);
        self.per_section(|_| mode.clone().unwrap_or_else(|| WakeMode::timer("no watch".into())))
    }

    /// Live subscriptions and dropped updates, per section.
    pub fn subscriber_totals(&self) -> PerSection<SubscriberTotals> {
        self.per_section(|o| o.hub().totals())
    }

    fn per_section<T>(&self, f: impl Fn(&dyn OwnerControl) -> T) -> PerSection<T> {
        match &self.inner.owners {
            Some(owners) => PerSection::new(owners.iter().map(|o| (o.name(), f(o))).collect()),
            None => PerSection::default(),
        }
    }

    /// Subscribes `recipient` to one section: it receives the current value at
    /// once (when there is one), then one [`Update`] per refresh that changed
    /// the data. `None` when the mirror is disabled or has no such section.
    pub fn subscribe(&self, section: SectionName, recipient: Recipient<Update>) -> Option<SubscriptionId> {
        self.listen(section, Listener::Actor(recipient))
    }

    fn listen(&self, section: SectionName, listener: Listener) -> Option<SubscriptionId> {
        let owner = self.inner.owners.as_ref()?.get(section)?;
        let id = SubscriptionId(self.inner.next_subscription.fetch_add(1, Ordering::Relaxed));
        owner.subscribe(id, listener);
        Some(id)
    }

    /// Has `notice` woken on every change of every section (one subscription
    /// each), with nothing rendered for it: the listener reads what it needs.
    pub(crate) fn notify_all(&self, notice: &Arc<tokio::sync::Notify>) -> Vec<SubscriptionId> {
        self.sections().into_iter().filter_map(|s| self.listen(s, Listener::Notice(Arc::downgrade(notice)))).collect()
    }

    /// Subscribes `recipient` to every section (one subscription each).
    pub fn subscribe_all(&self, recipient: Recipient<Update>) -> Vec<SubscriptionId> {
        self.sections().into_iter().filter_map(|s| self.subscribe(s, recipient.clone())).collect()
    }

    /// Ends a subscription; false when it was not active (already removed, or unknown).
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let Some(owners) = &self.inner.owners else {
            return false;
        };
        owners.iter().any(|o| o.hub().remove(id))
    }

    /// Delivery counters of every active subscription.
    pub fn subscriptions(&self) -> Vec<SubscriptionStats> {
        let Some(owners) = &self.inner.owners else {
            return Vec::new();
        };
        owners.iter().flat_map(|o| o.hub().stats()).collect()
    }

    /// Stops every section actor for good (no restarts) and ends every
    /// open stream; later snapshots say `unavailable`.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stopped.send_replace(true);
        if let Some(owners) = &self.inner.owners {
            owners.iter().for_each(|o| o.stop());
        }
    }

    /// Fault injection for tests: stops one section's arbiter, killing its
    /// actor as a panic would (the watchdog re-spawns it).
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn kill_section(&self, section: SectionName) {
        if let Some(owner) = self.inner.owners.as_ref().and_then(|o| o.get(section)) {
            owner.stop();
        }
    }

    /// Fault injection for tests: blocks one section actor's thread for `dur`.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn stall_section(&self, section: SectionName, dur: Duration) {
        if let Some(owner) = self.inner.owners.as_ref().and_then(|o| o.get(section)) {
            owner.arbiter_spawn(Box::new(move || std::thread::sleep(dur)));
        }
    }
}

/// A [`MirrorHandle`] that does not keep the mirror running.
#[derive(Clone, Debug)]
pub(crate) struct WeakMirrorHandle(Weak<Inner>);

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("id", &self.id).finish_non_exhaustive()
    }
}

impl WeakMirrorHandle {
    /// The mirror, while it runs.
    pub(crate) fn upgrade(&self) -> Option<MirrorHandle> {
        self.0.upgrade().map(|inner| MirrorHandle { inner })
    }
}

/// The CPU budget as `/health` shows it (README, "Commit to visible").
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct BudgetState {
    /// `ORCH_CPU_BUDGET_PERCENT`: the share of one core the mirror may spend when commits keep coming.
    pub percent: f64,
    /// Whether the budget delayed a refresh in the last two seconds: it, not
    /// `ORCH_COALESCE_MS`, sets the gap between refreshes (freshness gives,
    /// values stay exact).
    pub limiting: bool,
    /// Refreshes the budget delayed since the start.
    pub delays: u64,
}
