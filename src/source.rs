//! Where the mirror's facts come from: the orchestrator's database (read
//! only), `/proc`, the host's worker probe, the clock, and the build itself. Nothing here knows
//! about sections, actors or HTTP.

pub(crate) mod build;
mod change;
pub(crate) mod commits;
pub(crate) mod db;
mod held;
pub(crate) mod probe;
pub(crate) mod procstat;
pub(crate) mod round;
pub(crate) mod rows;
pub(crate) mod time;
pub(crate) mod walframes;
mod walguard;

pub(crate) use walguard::refusals as wal_guard_refusals;
pub(crate) use walguard::wal_left_behind;
