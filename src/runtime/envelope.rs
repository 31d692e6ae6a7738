//! The versioned JSON envelope: one typed value per response, assembled from
//! every section's answer with its status, ages computed against `generated_at`.
//! What a request reads of the mirror is here, on the runtime's side:
//! [`MirrorHandle::snapshot`] (the typed value) and
//! [`MirrorHandle::envelope_json`] (its bytes and weak tag, shared by the
//! requests of one millisecond); serving adds headers, compression and
//! the connection.

use std::time::Duration;

use actix::MailboxError;
use chrono::{DateTime, Utc};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::runtime::clock::Clock;
use crate::runtime::handle::MirrorHandle;
use crate::runtime::messages::Answer;
use crate::runtime::rendered::RenderCache;
use crate::runtime::stats::PerSection;
use crate::section::served::SERVED_WITH;
use crate::section::{
    AgentEntry, Agents, Cost, CostView, Queue, QueueView, Section, SectionData, SectionName, StageEntry, Stages, Status,
};
use crate::source::procstat;
use crate::source::time::format_seconds;

/// The envelope's `schema_version`.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// The body `/metrics` serves when `ORCH_METRICS_ENABLED` is false.
pub(crate) const DISABLED_BODY: &str = r#"{"schema_version":1,"enabled":false}"#;

/// One `/metrics` response (schema version 1), keys in contract order: the
/// four built-in sections, then host sections in registration order, then
/// `sections`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Envelope {
    /// Always 1 (this is `schema_version` 1).
    pub schema_version: u32,
    /// When the response was assembled, to the second; every age is relative to it.
    pub generated_at: DateTime<Utc>,
    /// The kernel's clock ticks per second (`None` off Linux).
    pub clk_tck: Option<u64>,
    /// Every section's value; `None` when it has no usable data.
    pub data: PerSection<Option<SectionData>>,
    /// The state of every section.
    pub sections: Sections,
}

impl Envelope {
    /// `S`'s value, typed; `None` when the section has no data (or is not registered).
    pub fn section<S: Section>(&self) -> Option<&S::View> {
        self.data.get(S::NAME)?.as_ref()?.get::<S>()
    }

    /// Active task stages.
    pub fn stages(&self) -> Option<&Vec<StageEntry>> {
        self.section::<Stages>()
    }

    /// The job queue.
    pub fn queue(&self) -> Option<&QueueView> {
        self.section::<Queue>()
    }

    /// Running agents.
    pub fn agents(&self) -> Option<&Vec<AgentEntry>> {
        self.section::<Agents>()
    }

    /// Cost and tokens.
    pub fn cost(&self) -> Option<&CostView> {
        self.section::<Cost>()
    }
}

impl Envelope {
    /// The envelope as JSON: the same bytes as `serde_json::to_vec(&envelope)`,
    /// with each section serialised through its concrete type.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let parts = self.json_parts()?;
        Ok(Vec::from(crate::runtime::pieces::join(&parts)))
    }

    /// [`Envelope::to_json`] as consecutive pieces: each section's JSON is
    /// the one buffer every response serving that value shares (no copy per
    /// response), with the small pieces between them made for this response.
    pub fn json_parts(&self) -> serde_json::Result<Vec<bytes::Bytes>> {
        let mut parts = Vec::with_capacity(2 * self.data.len() + 2);
        let mut glue = Vec::with_capacity(256);
        for (i, key) in self.keys().enumerate() {
            glue.push(if i == 0 { b'{' } else { b',' });
            serde_json::to_writer(&mut glue, key.name())?;
            glue.push(b':');
            match key {
                Key::Section(_, Some(data)) => {
                    parts.push(std::mem::take(&mut glue).into());
                    parts.push(data.json()?);
                }
                key => serde_json::to_writer(&mut glue, &key)?,
            }
        }
        glue.push(b'}');
        parts.push(glue.into());
        Ok(parts)
    }

    /// The envelope's keys in wire order, each with its value: the one
    /// description of the wire format that `Serialize`,
    /// [`Envelope::json_parts`] and the published JSON Schema walk.
    fn keys(&self) -> impl Iterator<Item = Key<'_>> {
        [Key::SchemaVersion(self.schema_version), Key::GeneratedAt(self.generated_at), Key::ClkTck(self.clk_tck)]
            .into_iter()
            .chain(self.data.iter().map(|(name, data)| Key::Section(name, data.as_ref())))
            .chain(std::iter::once(Key::Sections(&self.sections)))
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.data.len() + 4))?;
        for key in self.keys() {
            map.serialize_entry(key.name(), &key)?;
        }
        map.end()
    }
}

/// One key of the envelope with its value (see [`Envelope::keys`]).
enum Key<'a> {
    SchemaVersion(u32),
    GeneratedAt(DateTime<Utc>),
    ClkTck(Option<u64>),
    Section(SectionName, Option<&'a SectionData>),
    Sections(&'a Sections),
}

impl Key<'_> {
    /// The key's name in the JSON object.
    fn name(&self) -> &'static str {
        match self {
            Key::SchemaVersion(_) => "schema_version",
            Key::GeneratedAt(_) => "generated_at",
            Key::ClkTck(_) => "clk_tck",
            Key::Section(name, _) => name.as_str(),
            Key::Sections(_) => "sections",
        }
    }
}

impl Serialize for Key<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Key::SchemaVersion(v) => v.serialize(s),
            Key::GeneratedAt(at) => format_seconds(*at).serialize(s),
            Key::ClkTck(t) => t.serialize(s),
            Key::Section(_, data) => data.serialize(s),
            Key::Sections(states) => states.serialize(s),
        }
    }
}

/// The state of every section, by name.
pub type Sections = PerSection<SectionState>;

/// One section's state in a response.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct SectionState {
    /// What the section's value means.
    pub status: Status,
    /// The last successful refresh.
    #[serde(serialize_with = "crate::source::time::serialize_opt_millis")]
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Milliseconds from `refreshed_at` to this response.
    pub age_ms: Option<i64>,
    /// Why the section is not `ok`.
    pub error: Option<String>,
}

/// One section's state in a response from its answer.
fn state(answer: &Answer, clock: Clock, snapshot_timeout: Duration) -> SectionState {
    match &answer.reply {
        Ok(r) => SectionState {
            status: r.status,
            refreshed_at: r.refreshed_at,
            age_ms: r.refreshed_at.map(|at| (clock.now - at).num_milliseconds()),
            error: r.error.clone(),
        },
        Err(e) => SectionState {
            status: answer.status(),
            refreshed_at: None,
            age_ms: None,
            error: Some(match e {
                MailboxError::Timeout => format!(
                    "the {} actor did not answer within ORCH_SNAPSHOT_TIMEOUT_MS ({} ms)",
                    answer.section,
                    snapshot_timeout.as_millis()
                ),
                MailboxError::Closed => format!("the {} actor is not running", answer.section),
            }),
        },
    }
}

/// Each section served with another's data ([`SERVED_WITH`]) is made from
/// both when both have data; otherwise it is its own.
fn pair_served(
    answers: &[Answer],
    data: &mut [(SectionName, Option<SectionData>)],
    at: DateTime<Utc>,
    cache: &RenderCache,
) {
    for pairing in SERVED_WITH {
        let answer = |name| answers.iter().find(|a| a.section == name).and_then(Answer::data);
        let (Some(with), Some(own_data)) = (answer(pairing.with), answer(pairing.section)) else {
            continue;
        };
        let Some((_, slot)) = data.iter_mut().find(|(name, _)| *name == pairing.section) else {
            continue;
        };
        let Some(own) = slot.clone() else {
            continue;
        };
        let paired = || Some((pairing.pair)(&own, &**with).unwrap_or_else(|| own.clone()));
        *slot = cache.get_or_render(pairing.section, own_data, Some(with), at, paired);
    }
}

#[cfg(any(test, feature = "test-util"))]
/// Assembles one response from every section's answer (in envelope order);
/// ages are computed against `clock`.
pub fn assemble(answers: Vec<Answer>, clock: Clock, snapshot_timeout: Duration) -> Envelope {
    assemble_with(answers, clock, snapshot_timeout, &RenderCache::default())
}

/// [`assemble`], reusing the renderings in `cache` of data already rendered
/// at the same second (a value's ages depend only on `generated_at`).
pub(crate) fn assemble_with(
    answers: Vec<Answer>,
    clock: Clock,
    snapshot_timeout: Duration,
    cache: &RenderCache,
) -> Envelope {
    let mut data = Vec::with_capacity(answers.len());
    let mut states = Vec::with_capacity(answers.len());
    for answer in &answers {
        data.push((answer.section, answer.render_cached(clock.generated_at, cache)));
        states.push((answer.section, state(answer, clock, snapshot_timeout)));
    }
    pair_served(&answers, &mut data, clock.generated_at, cache);
    Envelope {
        schema_version: SCHEMA_VERSION,
        generated_at: clock.generated_at,
        clk_tck: procstat::clk_tck(),
        data: PerSection::new(data),
        sections: PerSection::new(states),
    }
}

/// What one `/metrics` body and its entity tag are made from: the mirror,
/// the millisecond of the clock reading, and each section's answer (its
/// sequence number, and its data by identity, kept alive so that its
/// address cannot be reused while cached).
struct BodyKey {
    mirror: u64,
    at_ms: i64,
    answers: Vec<AnswerKey>,
}

type AnswerKey = (
    SectionName,
    Result<
        (Status, u64, Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>, Option<DateTime<Utc>>, Option<String>),
        Status,
    >,
);

impl BodyKey {
    fn of(mirror: u64, at: DateTime<Utc>, answers: &[Answer]) -> Self {
        let answers = answers
            .iter()
            .map(|a| {
                let reply = match &a.reply {
                    Ok(r) => Ok((r.status, r.seq, r.data.clone(), r.refreshed_at, r.error.clone())),
                    Err(_) => Err(a.status()),
                };
                (a.section, reply)
            })
            .collect();
        Self { mirror, at_ms: at.timestamp_millis(), answers }
    }

    fn same(&self, other: &BodyKey) -> bool {
        let data = |d: &Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>| {
            d.as_ref().map(|d| std::sync::Arc::as_ptr(d) as *const ())
        };
        self.mirror == other.mirror
            && self.at_ms == other.at_ms
            && self.answers.len() == other.answers.len()
            && self.answers.iter().zip(&other.answers).all(|((n1, r1), (n2, r2))| {
                n1 == n2
                    && match (r1, r2) {
                        (Ok((s1, q1, d1, t1, e1)), Ok((s2, q2, d2, t2, e2))) => {
                            s1 == s2 && q1 == q2 && data(d1) == data(d2) && t1 == t2 && e1 == e2
                        }
                        (Err(a), Err(b)) => a == b,
                        _ => false,
                    }
            })
    }
}

/// A weak entity tag (`W/"…"`) from the mirror's instance (random, so that
/// no other mirror's tag, nor this one's before a restart, ever matches) and
/// each section's sequence number and status, as `/metrics` sends it in `ETag`.
fn entity_tag(instance: u64, answers: &[Answer]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    instance.hash(&mut h);
    for a in answers {
        a.section.as_str().hash(&mut h);
        match &a.reply {
            Ok(r) => r.seq.hash(&mut h),
            Err(_) => 0u64.hash(&mut h),
        }
        a.status().as_str().hash(&mut h);
    }
    format!("W/\"{:016x}\"", h.finish())
}

/// The largest body kept as one joined buffer (larger ones stay in pieces).
pub(crate) const JOINED_BODY_MAX: usize = 64 * 1024;

thread_local! {
    /// This thread's last `/metrics` body and entity tag, and what they were made from.
    static LAST_BODY: std::cell::RefCell<Option<(BodyKey, Vec<bytes::Bytes>, String)>> = const { std::cell::RefCell::new(None) };
}

impl MirrorHandle {
    /// `/metrics`'s body: [`Envelope::json_parts`] of a fresh assembly (a
    /// small body joined into one buffer). Requests in the same millisecond
    /// that find every section's answer unchanged share one body: it is
    /// byte for byte what assembling again would give. `None` when disabled.
    pub async fn envelope_json(&self) -> Option<serde_json::Result<Vec<bytes::Bytes>>> {
        Some(self.envelope_json_tagged().await?.map(|(parts, _)| parts))
    }

    /// [`MirrorHandle::envelope_json`] with the body's weak entity tag: the
    /// same while no section's sequence number or status changes (the ages
    /// move every second; they are not part of it).
    pub async fn envelope_json_tagged(&self) -> Option<serde_json::Result<(Vec<bytes::Bytes>, String)>> {
        let answers = self.answers().await?;
        let clock = Clock::now();
        let key = BodyKey::of(self.id(), clock.now, &answers);
        let hit = LAST_BODY.with(|last| {
            last.borrow().as_ref().filter(|(k, _, _)| k.same(&key)).map(|(_, parts, tag)| (parts.clone(), tag.clone()))
        });
        if let Some(hit) = hit {
            return Some(Ok(hit));
        }
        let tag = entity_tag(self.instance(), &answers);
        let envelope = assemble_with(answers, clock, self.snapshot_timeout(), self.render_cache());
        let parts = match envelope.json_parts() {
            Ok(parts) => parts,
            Err(e) => return Some(Err(e)),
        };
        let len: usize = parts.iter().map(bytes::Bytes::len).sum();
        let parts = if len <= JOINED_BODY_MAX { vec![crate::runtime::pieces::join(&parts)] } else { parts };
        LAST_BODY.with(|last| *last.borrow_mut() = Some((key, parts.clone(), tag.clone())));
        Some(Ok((parts, tag)))
    }

    /// The whole envelope, as `/metrics` serves it; `None` when disabled.
    ///
    /// Asks every section actor at once, each with the snapshot timeout, so it
    /// never waits longer than one timeout.
    pub async fn snapshot(&self) -> Option<Envelope> {
        let answers = self.answers().await?;
        Some(assemble_with(answers, Clock::now(), self.snapshot_timeout(), self.render_cache()))
    }
}

#[cfg(any(test, feature = "test-util"))]
mod schema;
#[cfg(any(test, feature = "test-util"))]
pub use schema::json_schema;

#[cfg(test)]
mod tests;
