//! Where the mirror's facts come from: the orchestrator's database (read
//! only), `/proc`, the host's worker probe, the clock, and the build itself. Nothing here knows
//! about sections, actors or HTTP.

pub mod build;
mod change;
pub mod commits;
pub mod db;
mod held;
pub mod probe;
pub mod procstat;
pub(crate) mod round;
pub mod rows;
pub mod time;
pub mod walframes;
mod walguard;

pub use walguard::refusals as wal_guard_refusals;
pub use walguard::wal_left_behind;
