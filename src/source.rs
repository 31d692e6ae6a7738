//! Where the mirror's facts come from: the orchestrator's database (read
//! only), `/proc`, the host's worker probe, and the clock. Nothing here knows
//! about sections, actors or HTTP.

pub mod db;
pub mod probe;
pub mod procstat;
pub mod time;
mod walguard;
