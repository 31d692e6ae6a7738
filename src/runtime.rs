//! The running mirror: one generic actor per section, the owners that start
//! it on its own arbiter and re-spawn it when it dies, the subscription hub,
//! refresh statistics, and the cheap handle the serving layer reads through.

pub(crate) mod actor;
pub(crate) mod budget;
pub(crate) mod builder;
pub(crate) mod clock;
pub(crate) mod envelope;
pub(crate) mod handle;
pub(crate) mod hub;
pub(crate) mod messages;
pub(crate) mod pieces;
mod reconcile;
pub(crate) mod rendered;
pub(crate) mod replica;
pub(crate) mod stats;
mod supervision;
pub(crate) mod timing;
