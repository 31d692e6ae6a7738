//! What a section is: a name, how to load it from the database (off the
//! actor's thread), how to render it against a response's `generated_at`, and
//! how it appears in the Prometheus exposition.
//!
//! The four built-in sections live in `section/`, one file each. A host adds
//! its own the same way: one type implementing [`Section`], registered with
//! [`crate::MirrorBuilder::section`]. Everything that lists sections (the
//! envelope, `sections`, `/health`, refresh periods, subscriptions, the
//! exposition, `tune`) iterates the registered set.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::registry::Registry;
use rusqlite::Connection;
use serde::{Serialize, Serializer};

mod agents;
mod cost;
pub(crate) mod metric;
mod queue;
pub(crate) mod served;
mod stages;

pub use crate::source::db::LoadError;
pub use crate::source::walframes::{ChangedRows, Changes};
pub use agents::{AgentEntry, Agents};
pub use cost::{Cost, CostAggregate, CostRunning, CostView};
pub use queue::{Queue, QueueCounts, QueueView, Retries};
pub use stages::{StageEntry, Stages};

/// A section's name: its envelope key, its `sections` key, its `section`
/// label and, upper-cased, the middle of its `ORCH_<NAME>_REFRESH_MS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SectionName(&'static str);

/// Envelope keys a section may not take.
const RESERVED: [&str; 5] = ["schema_version", "generated_at", "clk_tck", "sections", "enabled"];

impl SectionName {
    /// Active task stages.
    pub const STAGES: SectionName = SectionName("stages");
    /// The job queue.
    pub const QUEUE: SectionName = SectionName("queue");
    /// Running agent processes.
    pub const AGENTS: SectionName = SectionName("agents");
    /// Cost and tokens.
    pub const COST: SectionName = SectionName("cost");
    /// The four built-in sections, in envelope order.
    pub const BUILT_IN: &'static [SectionName] = &[Self::STAGES, Self::QUEUE, Self::AGENTS, Self::COST];

    /// A section name: lower-case ASCII letters, digits and `_`, starting with
    /// a letter, at most 32 bytes, and not one of the envelope's own keys.
    /// Used in a `const`, a bad name is a compile-time error.
    pub const fn new(name: &'static str) -> SectionName {
        let b = name.as_bytes();
        assert!(!b.is_empty() && b.len() <= 32, "a section name has 1 to 32 bytes");
        assert!(b[0].is_ascii_lowercase(), "a section name starts with a lower-case letter");
        let mut i = 0;
        while i < b.len() {
            assert!(
                b[i].is_ascii_lowercase() || b[i].is_ascii_digit() || b[i] == b'_',
                "a section name has only a-z, 0-9 and _"
            );
            i += 1;
        }
        let mut r = 0;
        while r < RESERVED.len() {
            assert!(!const_eq(name, RESERVED[r]), "a section name may not be an envelope key of its own");
            r += 1;
        }
        SectionName(name)
    }

    /// The section's key in the envelope.
    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// Whether this is one of the four built-in sections.
    pub fn is_built_in(self) -> bool {
        Self::BUILT_IN.contains(&self)
    }

    /// The environment variable of this section's refresh period.
    pub fn refresh_var(self) -> String {
        refresh_var_of(self.0)
    }
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl fmt::Display for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for SectionName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// A section's state as the envelope reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The latest refresh succeeded and the next one is not overdue.
    Ok,
    /// The latest refresh failed or is overdue; last good data (younger than `ORCH_MAX_STALE_MS`) is served.
    Stale,
    /// No refresh has finished yet.
    Pending,
    /// No usable data.
    Error,
    /// The section's actor did not answer within `ORCH_SNAPSHOT_TIMEOUT_MS`.
    Timeout,
    /// The section's actor is stopped or dead.
    Unavailable,
}

impl Status {
    /// Whether the section carries data in this state (`ok` and `stale`).
    pub fn has_data(self) -> bool {
        matches!(self, Status::Ok | Status::Stale)
    }

    /// The state's name as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Stale => "stale",
            Status::Pending => "pending",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::Unavailable => "unavailable",
        }
    }

    /// Every state.
    pub(crate) const ALL: [Status; 6] =
        [Status::Ok, Status::Stale, Status::Pending, Status::Error, Status::Timeout, Status::Unavailable];

    /// The state in one letter, the first of its name (they differ), as the
    /// stream's cursor writes it.
    pub(crate) fn letter(self) -> char {
        char::from(self.as_str().as_bytes()[0])
    }

    /// The state whose [`Status::letter`] is `letter`.
    pub(crate) fn from_letter(letter: char) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.letter() == letter)
    }
}

/// A built-in section's value in the published JSON Schema: what it means
/// and its schema (null when the section has no usable data); `None` for a
/// host's section.
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn built_in_schema(
    name: SectionName,
    generator: &mut schemars::SchemaGenerator,
) -> Option<(&'static str, schemars::Schema)> {
    Some(match name {
        SectionName::STAGES => ("Active task stages; null when the section has no usable data.", {
            generator.subschema_for::<Option<Vec<StageEntry>>>()
        }),
        SectionName::QUEUE => ("The job queue.", generator.subschema_for::<Option<QueueView>>()),
        SectionName::AGENTS => ("Running agents.", generator.subschema_for::<Option<Vec<AgentEntry>>>()),
        SectionName::COST => ("Cost and tokens.", generator.subschema_for::<Option<CostView>>()),
        _ => return None,
    })
}

/// The environment variable of the refresh period of the section named `name`
/// (registered or not): `ORCH_<NAME>_REFRESH_MS`.
pub(crate) fn refresh_var_of(name: &str) -> String {
    format!("ORCH_{}_REFRESH_MS", name.to_ascii_uppercase())
}

/// A section of the envelope, owned by one actor of its own.
pub trait Section: Send + Sync + 'static {
    /// The section's name and envelope key.
    const NAME: SectionName;
    /// What a refresh reads: raw values and parsed timestamps, no ages.
    type Data: Send + Sync + PartialEq + fmt::Debug + 'static;
    /// The section's JSON form for one response.
    type View: Serialize + Send + Sync + fmt::Debug + 'static;
    /// The SQL a refresh runs, for benchmarks (none by default).
    const STATEMENTS: &'static [&'static str] = &[];
    /// A query counting the rows a refresh reads, for `orchmirror tune`'s
    /// report (none by default).
    const ROWS_SQL: Option<&'static str> = None;

    /// Reads the section from the database with the plain queries over all
    /// rows: the reference every faster path must equal. Runs on a blocking thread.
    fn load(&self, conn: &Connection) -> Result<Self::Data, LoadError>;

    /// Reads the section at the cost of what changed since the last refresh,
    /// from state the section keeps (README, "Freshness and exactness"); with no state yet it
    /// builds it from every row. Must equal [`Section::load`] on the same read
    /// snapshot after any sequence of the orchestrator's pattern writes. A
    /// failed refresh leaves the state as it was. Default: `load`.
    fn refresh(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        self.load(conn)
    }

    /// [`Section::refresh`], told which rows the commits since the last
    /// refresh can have touched (a superset; [`Changes::Unknown`] when that
    /// cannot be told), so that a refresh reads what changed, not every row
    /// its state follows. Must equal [`Section::load`] likewise. Default:
    /// `refresh`.
    fn refresh_since(&self, conn: &Connection, changes: &Changes) -> Result<Self::Data, LoadError> {
        let _ = changes;
        self.refresh(conn)
    }

    /// Drops the incremental state, so the next [`Section::refresh`] derives
    /// everything from the database again (a reconciliation, or a detector
    /// that saw a history edit). Default: nothing to drop.
    fn forget(&self) {}

    /// Renders `data` for a response generated at `generated_at` (ages are computed here).
    fn view(data: &Self::Data, generated_at: DateTime<Utc>) -> Self::View;

    /// Refreshes what moves without a database change (CPU ticks, the worker
    /// probe) when the database is unchanged. `None`: `data` is still current.
    fn resample(&self, data: &Self::Data) -> Option<Self::Data> {
        let _ = data;
        None
    }

    /// Adds the section's raw-signal metric families to a scrape's registry
    /// (none by default). `clk_tck` is the envelope's.
    fn expose(view: &Self::View, clk_tck: Option<u64>, registry: &mut Registry) {
        let _ = (view, clk_tck, registry);
    }
}

/// What a section keeps between refreshes to fold in changes (README, "Freshness and exactness").
pub(crate) trait Incremental: Send + Sized {
    /// What a refresh derives from the state.
    type Out;
    /// The state of the database as it is, from every row.
    fn build(conn: &Connection) -> Result<Self, LoadError>;
    /// Folds in what changed since the state was taken (`changes`: which
    /// rows the commits since can have touched) and gives the value now;
    /// `None` when a row the state relies on is gone (a history edit).
    fn advance(&mut self, conn: &Connection, changes: &Changes) -> Result<Option<Self::Out>, LoadError>;
}

/// A section's kept state: absent until the first refresh and after `forget`.
#[derive(Debug, Default)]
pub(crate) struct Kept<T>(std::sync::Mutex<Option<T>>);

impl<T: Incremental> Kept<T> {
    /// Advances the state (building it first when there is none, rebuilding
    /// it when `advance` finds a history edit). The state is taken out while
    /// it advances: a failed query leaves none, and the next refresh builds
    /// it again (a copy to fall back on would cost every refresh a copy of
    /// everything kept).
    pub(crate) fn refresh(&self, conn: &Connection, table: &str, changes: &Changes) -> Result<T::Out, LoadError> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (mut state, changes) = match guard.take() {
            Some(state) => (state, changes),
            // Built on this snapshot: every row it follows is read as it is now.
            None => (T::build(conn)?, &Changes::Unknown),
        };
        let out = match state.advance(conn, changes)? {
            Some(out) => out,
            None => {
                state = T::build(conn)?;
                // Built and advanced on one read snapshot: nothing can be gone.
                state
                    .advance(conn, &Changes::Unknown)?
                    .ok_or_else(|| LoadError::Other(format!("{table} changed while it was read")))?
            }
        };
        *guard = Some(state);
        Ok(out)
    }

    /// Drops the state.
    pub(crate) fn forget(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Something done to each of several sections, whatever their types (see [`built_in`]).
pub(crate) trait SectionVisitor {
    /// Called once per section, in envelope order.
    fn visit<S: Section>(&mut self, section: S);
}

/// The four built-in sections, in envelope order: the one place they are
/// listed. `pid_start_tolerance` is the agents section's pid-reuse guard;
/// `worker` feeds the queue section's worker fields when embedded with a probe.
pub(crate) fn built_in(
    pid_start_tolerance: std::time::Duration,
    worker: Option<Arc<std::sync::Mutex<crate::source::probe::WorkerLive>>>,
    visitor: &mut impl SectionVisitor,
) {
    visitor.visit(Stages);
    visitor.visit(worker.map_or_else(Queue::new, Queue::with_worker));
    visitor.visit(Agents::new(pid_start_tolerance));
    visitor.visit(Cost::new());
}

/// A rendered section value whose type is known only to its section.
trait Rendered: erased_serde::Serialize + Send + Sync + fmt::Debug {
    fn as_any(&self) -> &dyn Any;
    /// The value as JSON, serialised with the concrete type (no dynamic
    /// dispatch per field, as `erased_serde` has): the `/metrics` hot path.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
    fn expose(&self, clk_tck: Option<u64>, registry: &mut Registry);
}

erased_serde::serialize_trait_object!(Rendered);

/// `S::View`, remembering `S`.
struct View<S: Section>(S::View);

impl<S: Section> fmt::Debug for View<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: Section> Serialize for View<S> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.0.serialize(s)
    }
}

impl<S: Section> Rendered for View<S> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, &self.0)
    }

    fn expose(&self, clk_tck: Option<u64>, registry: &mut Registry) {
        S::expose(&self.0, clk_tck, registry);
    }
}

/// One section's rendered value, whatever the section: what subscribers
/// receive and what the envelope holds. Serialises as the section's JSON;
/// [`SectionData::get`] gives the typed value back.
#[derive(Debug, Clone)]
pub struct SectionData {
    name: SectionName,
    view: Arc<dyn Rendered>,
    /// The value's JSON, made once and shared by every response that serves this value.
    json: Arc<std::sync::OnceLock<bytes::Bytes>>,
    /// The value's OpenMetrics families (without `# EOF`), made once likewise.
    exposition: Arc<std::sync::OnceLock<Arc<str>>>,
}

impl SectionData {
    /// `S`'s view of `data` for a response generated at `generated_at`.
    pub fn render<S: Section>(data: &S::Data, generated_at: DateTime<Utc>) -> Self {
        Self::of::<S>(S::view(data, generated_at))
    }

    /// Wraps a rendered view of `S`.
    pub fn of<S: Section>(view: S::View) -> Self {
        Self { name: S::NAME, view: Arc::new(View::<S>(view)), json: Arc::default(), exposition: Arc::default() }
    }

    /// Which section this is.
    pub fn name(&self) -> SectionName {
        self.name
    }

    /// The typed value, when this is `S`'s.
    pub fn get<S: Section>(&self) -> Option<&S::View> {
        self.view.as_any().downcast_ref::<View<S>>().map(|v| &v.0)
    }

    /// Appends the value's JSON to `out` (what its `Serialize` gives, faster).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(&self.json()?);
        Ok(())
    }

    /// The value's JSON (what its `Serialize` gives), serialised on first use
    /// and shared by every clone of this value after that.
    pub fn json(&self) -> serde_json::Result<bytes::Bytes> {
        if let Some(json) = self.json.get() {
            return Ok(json.clone());
        }
        let mut out = Vec::new();
        self.view.write_json(&mut out)?;
        Ok(self.json.get_or_init(|| out.into()).clone())
    }

    /// The section's metric families as OpenMetrics text without the final
    /// `# EOF` line (what encoding a registry holding only them gives), made
    /// on first use and shared by every clone of this value after that.
    /// `clk_tck` is fixed for the life of the process.
    pub fn exposition(&self, clk_tck: Option<u64>) -> Result<Arc<str>, fmt::Error> {
        if let Some(text) = self.exposition.get() {
            return Ok(Arc::clone(text));
        }
        let mut registry = Registry::default();
        self.view.expose(clk_tck, &mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        let out = metric::stable_order(&out);
        let families = out.strip_suffix("# EOF\n").unwrap_or(&out);
        Ok(Arc::clone(self.exposition.get_or_init(|| Arc::from(families))))
    }

    /// Adds the section's metric families to `registry` (see [`Section::expose`]).
    pub fn expose(&self, clk_tck: Option<u64>, registry: &mut Registry) {
        self.view.expose(clk_tck, registry);
    }
}

impl Serialize for SectionData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.view.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_their_variables() {
        assert_eq!(SectionName::new("workers").refresh_var(), "ORCH_WORKERS_REFRESH_MS");
        assert_eq!(SectionName::QUEUE.to_string(), "queue");
        assert!(SectionName::COST.is_built_in() && !SectionName::new("workers").is_built_in());
    }

    #[test]
    #[should_panic(expected = "envelope key")]
    fn a_section_cannot_take_an_envelope_key() {
        let _ = SectionName::new(std::hint::black_box("sections"));
    }

    #[test]
    #[should_panic(expected = "only a-z")]
    fn a_section_name_is_plain() {
        let _ = SectionName::new(std::hint::black_box("work-ers"));
    }
}
