//! The versioned JSON envelope: one typed value per response, assembled from
//! the four section replies with their statuses, ages computed against `generated_at`.

use std::time::Duration;

use actix::MailboxError;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::messages::{SectionReply, Status};
use crate::mirror::{PerSection, Restarts};
use crate::procstat;
use crate::section::{AgentEntry, Agents, Cost, CostView, Queue, QueueView, Section, StageEntry, Stages};
use crate::subscribe::SubscriberTotals;
use crate::time::{format_millis, format_seconds, truncate_to_second};

/// The envelope's `schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// The body `/metrics` serves when `ORCH_METRICS_ENABLED` is false.
pub const DISABLED_BODY: &str = r#"{"schema_version":1,"enabled":false}"#;

/// Every body `GET /metrics` can answer with (the published JSON Schema's root).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
#[schemars(title = "orchmirror /metrics envelope")]
pub enum MetricsBody {
    /// The envelope.
    Envelope(Box<Envelope>),
    /// What the kill switch serves: `{"schema_version":1,"enabled":false}`.
    Disabled(Disabled),
}

/// The kill switch's body.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Disabled {
    /// Always [`SCHEMA_VERSION`].
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// Always false.
    #[schemars(extend("const" = false))]
    pub enabled: bool,
}

/// The JSON Schema of every `/metrics` JSON body, as checked in at `docs/envelope.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(MetricsBody)).unwrap_or_default()
}

/// One `/metrics` response (schema version 1), keys in contract order.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Envelope {
    /// Always [`SCHEMA_VERSION`].
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// When the response was assembled, to the second; every age is relative to it.
    #[serde(serialize_with = "seconds")]
    pub generated_at: DateTime<Utc>,
    /// The kernel's clock ticks per second (`None` off Linux).
    pub clk_tck: Option<u64>,
    /// Active task stages; `None` when the section has no usable data.
    pub stages: Option<Vec<StageEntry>>,
    /// The job queue.
    pub queue: Option<QueueView>,
    /// Running agents.
    pub agents: Option<Vec<AgentEntry>>,
    /// Cost and tokens.
    pub cost: Option<CostView>,
    /// The state of every section.
    pub sections: Sections,
}

/// The state of all four sections.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Sections {
    /// `stages`.
    pub stages: SectionState,
    /// `queue`.
    pub queue: SectionState,
    /// `agents`.
    pub agents: SectionState,
    /// `cost`.
    pub cost: SectionState,
}

impl Sections {
    /// Every section's state, in envelope order.
    pub fn iter(&self) -> impl Iterator<Item = &SectionState> {
        [&self.stages, &self.queue, &self.agents, &self.cost].into_iter()
    }
}

/// One section's state in a response.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct SectionState {
    /// What the section's value means.
    pub status: Status,
    /// The last successful refresh.
    #[serde(serialize_with = "opt_millis")]
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Milliseconds from `refreshed_at` to this response.
    pub age_ms: Option<i64>,
    /// Why the section is not `ok`.
    pub error: Option<String>,
}

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
}

impl Health {
    /// The health view of an envelope.
    pub fn of(envelope: &Envelope, restarts: Restarts, subscribers: PerSection<SubscriberTotals>) -> Self {
        let ok = envelope.sections.iter().all(|s| s.status == Status::Ok);
        Health {
            status: if ok { "ok" } else { "degraded" },
            sections: envelope.sections.clone(),
            restarts,
            subscribers,
        }
    }
}

fn seconds<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_seconds(*at))
}

fn opt_millis<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&format_millis(*at)),
        None => s.serialize_none(),
    }
}

/// The instant a response is generated: the precise clock, and `generated_at` (whole seconds).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The precise reading; `age_ms` is measured against it.
    pub now: DateTime<Utc>,
    /// `now` truncated to the second; ages in seconds are measured against it.
    pub generated_at: DateTime<Utc>,
}

impl Clock {
    /// Reads the clock.
    pub fn now() -> Self {
        Self::at(Utc::now())
    }

    /// A clock reading at `now`.
    pub fn at(now: DateTime<Utc>) -> Self {
        Self { now, generated_at: truncate_to_second(now) }
    }
}

/// Renders one section's reply (or the mailbox error in its place) for a response.
pub fn render<S: Section>(
    reply: Result<SectionReply<S::Data>, MailboxError>,
    clock: Clock,
    snapshot_timeout: Duration,
) -> (Option<S::View>, SectionState) {
    match reply {
        Ok(r) => {
            let view = r.data.as_deref().map(|d| S::view(d, clock.generated_at));
            let state = SectionState {
                status: r.status,
                refreshed_at: r.refreshed_at,
                age_ms: r.refreshed_at.map(|at| (clock.now - at).num_milliseconds()),
                error: r.error,
            };
            (view, state)
        }
        Err(MailboxError::Timeout) => (
            None,
            SectionState {
                status: Status::Timeout,
                refreshed_at: None,
                age_ms: None,
                error: Some(format!(
                    "the {} actor did not answer within ORCH_SNAPSHOT_TIMEOUT_MS ({} ms)",
                    S::NAME,
                    snapshot_timeout.as_millis()
                )),
            },
        ),
        Err(MailboxError::Closed) => (
            None,
            SectionState {
                status: Status::Unavailable,
                refreshed_at: None,
                age_ms: None,
                error: Some(format!("the {} actor is not running", S::NAME)),
            },
        ),
    }
}

/// A section actor's answer, or the mailbox error in its place.
pub type Reply<S> = Result<SectionReply<<S as Section>::Data>, MailboxError>;

/// The four answers one response is assembled from.
#[derive(Debug)]
pub struct Replies {
    /// From the stages actor.
    pub stages: Reply<Stages>,
    /// From the queue actor.
    pub queue: Reply<Queue>,
    /// From the agents actor.
    pub agents: Reply<Agents>,
    /// From the cost actor.
    pub cost: Reply<Cost>,
}

/// Assembles one response from the four answers; ages are computed against `clock`.
pub fn assemble(replies: Replies, clock: Clock, snapshot_timeout: Duration) -> Envelope {
    let (stages, stages_state) = render::<Stages>(replies.stages, clock, snapshot_timeout);
    let (queue, queue_state) = render::<Queue>(replies.queue, clock, snapshot_timeout);
    let (agents, agents_state) = render::<Agents>(replies.agents, clock, snapshot_timeout);
    let (cost, cost_state) = render::<Cost>(replies.cost, clock, snapshot_timeout);
    Envelope {
        schema_version: SCHEMA_VERSION,
        generated_at: clock.generated_at,
        clk_tck: procstat::clk_tck(),
        stages,
        queue,
        agents,
        cost,
        sections: Sections { stages: stages_state, queue: queue_state, agents: agents_state, cost: cost_state },
    }
}
