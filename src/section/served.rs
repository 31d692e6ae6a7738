//! Sections served together: a section whose served value is also made from
//! another section's data. Serving asks this list and names no section.

use std::any::Any;

use crate::section::{Agents, Cost, Section, SectionData, SectionName};

/// A section whose served value is made with another section's data.
pub(crate) struct ServedWith {
    /// The section served.
    pub(crate) section: SectionName,
    /// The section whose data it is made with.
    pub(crate) with: SectionName,
    /// The served value from the section's own rendered value and the other
    /// section's data; `None` keeps the section's own value.
    pub(crate) pair: fn(own: &SectionData, with: &(dyn Any + Send + Sync)) -> Option<SectionData>,
}

/// Every pairing. `cost.running` has exactly the `agents` entries, in the
/// same order, in every envelope, whatever the two sections' periods (README,
/// "The envelope"): when the agents section has data, `cost.running` is built
/// from the same rows (each carries its run's stored cost); otherwise it is
/// the cost section's own read. A change of `agents` therefore changes the
/// served `cost`.
pub(crate) const SERVED_WITH: &[ServedWith] =
    &[ServedWith { section: SectionName::COST, with: SectionName::AGENTS, pair: cost_with_agents }];

fn cost_with_agents(own: &SectionData, with: &(dyn Any + Send + Sync)) -> Option<SectionData> {
    let rows = with.downcast_ref::<<Agents as Section>::Data>()?;
    let cost = own.get::<Cost>()?;
    Some(SectionData::of::<Cost>(cost.paired_with(rows)))
}

/// How the changes-only stream describes a change of a section (README,
/// "The stream"): where its rows are and what identifies one, and which of
/// its fields are ages (they move with `generated_at`; a reader moves them
/// on itself).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChangeShape {
    /// The section's rows: `None` for a section without rows.
    pub(crate) rows: Option<Rows>,
    /// Fields holding an age in seconds (`generated_at` − a stored time), at
    /// the section's top level or in its rows.
    pub(crate) ages: &'static [&'static str],
}

/// Where a section's rows are and their key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows {
    /// The field holding the rows; `None` when the section's value is the rows.
    pub(crate) at: Option<&'static str>,
    /// The field that identifies a row (unique among the rows).
    pub(crate) key: &'static str,
}

/// A section's change shape: the built-in sections' rows and ages; a host's
/// section has none (its changes are its changed top-level fields, or it is
/// sent whole).
pub(crate) fn change_shape(section: SectionName) -> ChangeShape {
    let rows = |at, key| Some(Rows { at, key });
    match section {
        SectionName::STAGES => ChangeShape { rows: rows(None, "task_id"), ages: &["age_in_stage_s"] },
        SectionName::AGENTS => ChangeShape { rows: rows(None, "job_id"), ages: &["runtime_s"] },
        SectionName::QUEUE => ChangeShape { rows: None, ages: &["oldest_queued_age_s"] },
        SectionName::COST => ChangeShape { rows: rows(Some("running"), "job_id"), ages: &[] },
        _ => ChangeShape { rows: None, ages: &[] },
    }
}
