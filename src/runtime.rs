//! The running mirror: one generic actor per section, the owners that start
//! it on its own arbiter and re-spawn it when it dies, the subscription hub,
//! refresh statistics, and the cheap handle the serving layer reads through.

pub mod actor;
pub mod budget;
pub mod builder;
pub mod handle;
pub mod hub;
pub mod messages;
mod reconcile;
pub mod replica;
pub mod stats;
mod supervision;
pub mod timing;
