//! The host worker's live state for the queue section: a probe the host
//! implements, polled on the queue's period with a timeout per read.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde_json::Value;

/// Default time each probe read may take before its field is `null`.
pub(crate) const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(100);

/// What a probe read returns: any serialisable value, or why there is none.
pub type ProbeResult = Result<Value, String>;

/// How the queue section reads the host worker's live state. Each method is
/// awaited with its own timeout on the thread that started the mirror; an
/// error or a timeout makes just that field `null`.
pub trait WorkerProbe: 'static {
    /// The circuit breaker's snapshot (`queue.breaker`).
    fn breaker(&self) -> LocalBoxFuture<'static, ProbeResult>;
    /// The worker's `max_concurrency` (`queue.max_concurrency`).
    fn max_concurrency(&self) -> LocalBoxFuture<'static, ProbeResult>;
    /// The worker's `poll_interval` (`queue.poll_interval`).
    fn poll_interval(&self) -> LocalBoxFuture<'static, ProbeResult>;
}

/// The latest probe reads, shared with the queue section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerLive {
    /// `queue.breaker`.
    pub breaker: Option<Value>,
    /// `queue.max_concurrency`.
    pub max_concurrency: Option<Value>,
    /// `queue.poll_interval`.
    pub poll_interval: Option<Value>,
}

async fn read(field: &str, timeout: Duration, fut: LocalBoxFuture<'static, ProbeResult>) -> Option<Value> {
    match actix_web::rt::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(field, error = %e, "worker probe failed");
            None
        }
        Err(_) => {
            tracing::debug!(field, timeout_ms = timeout.as_millis(), "worker probe timed out");
            None
        }
    }
}

/// Polls `probe` every `period` until `alive` can no longer be upgraded.
pub(crate) async fn poll<T>(
    probe: Box<dyn WorkerProbe>,
    live: Arc<Mutex<WorkerLive>>,
    period: Duration,
    timeout: Duration,
    alive: Weak<T>,
) {
    loop {
        if alive.strong_count() == 0 {
            return;
        }
        let (breaker, max_concurrency, poll_interval) = futures_util::join!(
            read("breaker", timeout, probe.breaker()),
            read("max_concurrency", timeout, probe.max_concurrency()),
            read("poll_interval", timeout, probe.poll_interval()),
        );
        *live.lock().unwrap_or_else(|p| p.into_inner()) = WorkerLive { breaker, max_concurrency, poll_interval };
        actix_web::rt::time::sleep(period).await;
    }
}
