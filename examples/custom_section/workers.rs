//! A host's own section: its worker pool, built outside the crate on the
//! public `Section` trait. It reads no table; it copies the pool's state,
//! which the host changes as it works.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use orchmirror::section::LoadError;
use orchmirror::{Section, SectionName};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rusqlite::Connection;
use serde::Serialize;

/// The host's worker pool, shared between the host and the section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pool {
    /// Workers the pool may run.
    pub size: u32,
    /// Workers busy now.
    pub busy: u32,
}

/// The section: `workers` in the envelope, `ORCH_WORKERS_REFRESH_MS`.
pub struct Workers(pub Arc<Mutex<Pool>>);

impl Workers {
    fn read(&self) -> Pool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the section serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkersView {
    /// Workers the pool may run.
    pub size: u32,
    /// Workers busy now.
    pub busy: u32,
    /// Workers free now.
    pub idle: u32,
}

impl Section for Workers {
    const NAME: SectionName = SectionName::new("workers");
    type Data = Pool;
    type View = WorkersView;

    fn load(&self, _: &Connection) -> Result<Pool, LoadError> {
        Ok(self.read())
    }

    // The pool changes without a database commit: read it on unchanged refreshes too.
    fn resample(&self, data: &Pool) -> Option<Pool> {
        Some(self.read()).filter(|now| now != data)
    }

    fn view(pool: &Pool, _: DateTime<Utc>) -> WorkersView {
        WorkersView { size: pool.size, busy: pool.busy, idle: pool.size.saturating_sub(pool.busy) }
    }

    fn expose(view: &WorkersView, _: Option<u64>, registry: &mut Registry) {
        let busy = Gauge::<i64>::default();
        busy.set(i64::from(view.busy));
        registry.register("host_workers_busy", "Busy workers in the host's pool", busy);
    }
}
