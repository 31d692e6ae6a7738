//! The mirror's CPU budget (`ORCH_CPU_BUDGET_PERCENT`): a share of one core
//! that refreshes woken by commits may not exceed, whatever the commit rate.
//!
//! An account in CPU seconds, credited at the budget's rate as wall time
//! passes (at most one second's worth is saved up, so a quiet minute does
//! not pay for a long burst, and at most one second's worth is owed, so a
//! spike such as the first full load does not hold refreshes back for long) and charged with the process's own CPU time
//! (`CLOCK_PROCESS_CPUTIME_ID`: everything the mirror spends, the refreshes'
//! queries, the looks at the files, the wake-ups, serving). While it is
//! overdrawn, a section that a commit woke waits until it is not, but never
//! longer than its own period: the gap between refreshes widens, the
//! values stay exact (the refresh that runs reads everything committed so
//! far), and freshness is what gives.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long after the budget last delayed a refresh it is still reported
/// as what sets the gap.
const LIMITING_FOR: Duration = Duration::from_secs(2);

/// The process's CPU time so far; `None` where it cannot be read.
fn process_cpu() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).ok().map(Duration::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[derive(Debug)]
struct Account {
    /// CPU seconds that may still be spent (negative: overdrawn).
    balance: f64,
    /// When the account was last settled, and the process's CPU time then.
    at: Instant,
    cpu: Option<Duration>,
    /// When the budget last delayed a refresh.
    limited_at: Option<Instant>,
}

/// One mirror's CPU budget, shared by its section actors.
#[derive(Debug)]
pub struct Budget {
    /// CPU seconds per second of wall time.
    share: f64,
    account: Mutex<Account>,
    /// Refreshes it delayed.
    delays: AtomicU64,
}

impl Budget {
    /// A budget of `percent` of one core.
    pub fn new(percent: f64) -> Budget {
        let share = (percent / 100.0).clamp(1e-6, 64.0);
        Budget {
            share,
            account: Mutex::new(Account { balance: share, at: Instant::now(), cpu: process_cpu(), limited_at: None }),
            delays: AtomicU64::new(0),
        }
    }

    /// The budget, in percent of one core.
    pub fn percent(&self) -> f64 {
        self.share * 100.0
    }

    fn settle(&self) -> std::sync::MutexGuard<'_, Account> {
        let mut a = self.account.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let cpu = process_cpu();
        let spent = match (a.cpu, cpu) {
            (Some(before), Some(after)) => after.saturating_sub(before).as_secs_f64(),
            _ => 0.0,
        };
        let credit = now.duration_since(a.at).as_secs_f64() * self.share;
        // At most a second's worth saved up, and at most a second's worth
        // owed: a burst that ended (the first full load of a big database
        // included) does not hold back the refreshes after it for long.
        a.balance = (a.balance + credit - spent).clamp(-self.share, self.share);
        a.at = now;
        a.cpu = cpu;
        a
    }

    /// How long a refresh that a commit woke waits for the budget, at most
    /// `longest` (its section's period); zero while the budget is not overdrawn.
    pub fn wait(&self, longest: Duration) -> Duration {
        let mut a = self.settle();
        if a.balance >= 0.0 {
            return Duration::ZERO;
        }
        let wait = Duration::from_secs_f64((-a.balance / self.share).min(longest.as_secs_f64()));
        a.limited_at = Some(a.at);
        self.delays.fetch_add(1, Ordering::Relaxed);
        wait
    }

    /// How long until the account is no longer overdrawn, at most `longest`;
    /// zero while it is not. Unlike [`Budget::wait`] it delays nothing
    /// itself, so it counts no delay.
    pub fn owed(&self, longest: Duration) -> Duration {
        let a = self.settle();
        if a.balance >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((-a.balance / self.share).min(longest.as_secs_f64()))
    }

    /// Whether the budget delayed a refresh lately (it is what sets the gap
    /// between refreshes, not `ORCH_COALESCE_MS`).
    pub fn limiting(&self) -> bool {
        let a = self.account.lock().unwrap_or_else(|p| p.into_inner());
        a.limited_at.is_some_and(|at| at.elapsed() < LIMITING_FOR)
    }

    /// Refreshes the budget delayed so far.
    pub fn delays(&self) -> u64 {
        self.delays.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn an_overdrawn_budget_makes_refreshes_wait_up_to_their_period() {
        let b = Budget::new(1.0);
        assert_eq!(b.wait(Duration::from_secs(1)), Duration::ZERO, "a fresh budget has a second's worth");
        assert!(!b.limiting());
        // Spend 30 ms of CPU: 1 % of a core is 10 ms a second, so the account is overdrawn.
        let until = Instant::now() + Duration::from_secs(5);
        let start = process_cpu().unwrap_or_default();
        while process_cpu().unwrap_or_default().saturating_sub(start) < Duration::from_millis(30)
            && Instant::now() < until
        {
            std::hint::black_box((0..1000u64).sum::<u64>());
        }
        let wait = b.wait(Duration::from_secs(1));
        assert!(wait > Duration::ZERO, "overdrawn");
        assert!(b.limiting());
        assert_eq!(b.delays(), 1);
        assert!(b.wait(Duration::from_millis(3)) <= Duration::from_millis(3), "never past the period");
    }
}
