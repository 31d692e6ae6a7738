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
