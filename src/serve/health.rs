//! `/health`'s view: every section's state and the mirror's own counters.

use serde::Serialize;

use crate::runtime::envelope::{Envelope, Sections};
use crate::runtime::handle::{BudgetState, MirrorHandle};
use crate::runtime::hub::SubscriberTotals;
use crate::runtime::stats::{PerSection, Reconciliation, Restarts};
use crate::section::Status;
use crate::serve::stream::StreamTotals;
use crate::source::commits::WakeMode;

/// `/health`: `degraded` when any section is not `ok`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// The state of every section, as in the envelope.
    pub sections: Sections,
    /// How often each section's actor was found dead and re-spawned.
    pub restarts: Restarts,
    /// Live subscriptions and updates dropped for full mailboxes, per section.
    pub subscribers: PerSection<SubscriberTotals>,
    /// Each section's last full recomputation and the drift found (README, "Freshness and exactness").
    pub reconciliation: PerSection<Reconciliation>,
    /// `/metrics/stream` clients open now, events sent and resyncs (README, "The stream").
    pub streams: StreamTotals,
    /// How each section is woken: by commits (`commit`) or its timer alone
    /// (`timer`, with the reason) (README, "Commit to visible").
    pub wake: PerSection<WakeMode>,
    /// The CPU budget, and whether it sets the gap between refreshes now
    /// (README, "Commit to visible").
    pub budget: BudgetState,
}

impl Health {
    /// The health view of an envelope.
    pub fn of(
        envelope: &Envelope,
        restarts: Restarts,
        subscribers: PerSection<SubscriberTotals>,
        reconciliation: PerSection<Reconciliation>,
        streams: StreamTotals,
        wake: PerSection<WakeMode>,
        budget: BudgetState,
    ) -> Self {
        let ok = envelope.sections.iter().all(|(_, s)| s.status == Status::Ok);
        Health {
            status: if ok { "ok" } else { "degraded" },
            sections: envelope.sections.clone(),
            restarts,
            subscribers,
            reconciliation,
            streams,
            wake,
            budget,
        }
    }
}

impl Health {
    /// `/health`'s answer for `handle`'s mirror and its routes' `streams`;
    /// `None` when the mirror is disabled.
    pub(crate) async fn read(handle: &MirrorHandle, streams: StreamTotals) -> Option<Health> {
        let envelope = handle.snapshot().await?;
        Some(Health::of(
            &envelope,
            handle.restarts(),
            handle.subscriber_totals(),
            handle.reconciliations(),
            streams,
            handle.wake_modes(),
            handle.budget(),
        ))
    }
}
