//! Renderings shared by responses: a section's value rendered once per change
//! (and per second, for its ages), not once per request.

use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::section::{SectionData, SectionName};

/// The address of shared data, to tell whether two answers carry the same value.
fn addr(data: &Arc<dyn Any + Send + Sync>) -> *const () {
    Arc::as_ptr(data) as *const ()
}

/// One section's last rendering, and what it was rendered from.
struct Rendering {
    section: SectionName,
    /// The data rendered (kept alive, so its address cannot be reused while cached).
    data: Arc<dyn Any + Send + Sync>,
    /// Other data the rendering also depends on (the agents rows `cost.running` pairs with).
    with: Option<Arc<dyn Any + Send + Sync>>,
    at: DateTime<Utc>,
    view: SectionData,
}

/// Each section's latest rendering, reused by every response that serves the
/// same data at the same second: rendering and serialising happen once per
/// change (and per second, for the ages), not once per request.
#[derive(Default)]
pub struct RenderCache(std::sync::Mutex<Vec<Rendering>>);

impl std::fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderCache").finish_non_exhaustive()
    }
}

impl RenderCache {
    /// `section`'s rendering of `data` (and `with`) at `at`: the cached one
    /// when it was made from the same values, else `render()`'s, cached.
    pub fn get_or_render(
        &self,
        section: SectionName,
        data: &Arc<dyn Any + Send + Sync>,
        with: Option<&Arc<dyn Any + Send + Sync>>,
        at: DateTime<Utc>,
        render: impl FnOnce() -> Option<SectionData>,
    ) -> Option<SectionData> {
        let same = |r: &Rendering| {
            r.section == section
                && r.at == at
                && addr(&r.data) == addr(data)
                && r.with.as_ref().map(addr) == with.map(addr)
        };
        {
            let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = cache.iter().find(|r| same(r)) {
                return Some(r.view.clone());
            }
        }
        // Rendered outside the lock: two requests may both render, and one wins.
        let view = render()?;
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // One rendering per section and kind (plain, or paired with other data),
        // so the two kinds of one section do not evict each other.
        cache.retain(|r| r.section != section || r.with.is_some() != with.is_some());
        cache.push(Rendering { section, data: Arc::clone(data), with: with.cloned(), at, view: view.clone() });
        Some(view)
    }
}
