//! CPU ticks of agent processes from `/proc`, with the pid-reuse guard.
//!
//! A pid in the database may long since belong to another process. The guard:
//! the process's start time (boot time + `starttime` ticks) must lie within a
//! tolerance of the run's `started_at`; otherwise the ticks are not the run's.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A tick count and when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// When the ticks were read.
    pub sampled_at: DateTime<Utc>,
}

/// The kernel's clock ticks per second; `None` off Linux.
pub fn clk_tck() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // Fixed for the life of the process; read once.
        static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        Some(*TICKS.get_or_init(procfs::ticks_per_second))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Samples `pid`'s CPU ticks if it is alive and started within `tolerance` of `run_started_at`.
///
/// `None` for a gone process, a zombie, a kernel thread, a pid whose start time
/// does not match the run (reused pid), an unknown `run_started_at` (identity
/// cannot be checked), or off Linux. Never an error: one agent's process state
/// says nothing about the section.
pub fn sample(pid: i32, run_started_at: Option<DateTime<Utc>>, tolerance: Duration) -> Option<CpuSample> {
    #[cfg(target_os = "linux")]
    {
        linux::sample(pid, run_started_at?, tolerance)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, run_started_at, tolerance);
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;

    /// `PF_KTHREAD` in `/proc/<pid>/stat`'s flags.
    const PF_KTHREAD: u32 = 0x0020_0000;

    pub(super) fn sample(pid: i32, run_started_at: DateTime<Utc>, tolerance: Duration) -> Option<CpuSample> {
        let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
        let sampled_at = Utc::now();
        // Zombies and dead tasks have no live agent behind them; kernel threads never are one.
        if matches!(stat.state, 'Z' | 'X' | 'x') || stat.flags & PF_KTHREAD != 0 {
            return None;
        }
        let tps = procfs::ticks_per_second();
        let boot_secs = i64::try_from(procfs::boot_time_secs().ok()?).ok()?;
        let start_ms = i64::try_from(u128::from(stat.starttime) * 1000 / u128::from(tps.max(1))).ok()?;
        let started = DateTime::from_timestamp_millis(boot_secs.checked_mul(1000)?.checked_add(start_ms)?)?;
        let drift = (started - run_started_at).abs().to_std().ok()?;
        if drift > tolerance {
            return None;
        }
        Some(CpuSample { ticks: stat.utime.saturating_add(stat.stime), sampled_at })
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_sampled_and_a_mismatched_start_is_refused() {
        let me = procfs::process::Process::myself().and_then(|p| p.stat());
        let me = me.ok();
        let pid = std::process::id() as i32;
        let tps = procfs::ticks_per_second();
        let boot = procfs::boot_time_secs().ok();
        let (Some(me), Some(boot)) = (me, boot) else { panic!("cannot read /proc for this test") };
        let start = DateTime::from_timestamp((boot + me.starttime / tps) as i64, 0);
        let Some(start) = start else { panic!("bad start time") };
        let tol = Duration::from_secs(10);
        assert!(sample(pid, Some(start), tol).is_some());
        assert_eq!(sample(pid, Some(start - chrono::Duration::seconds(3600)), tol), None);
        assert_eq!(sample(pid, None, tol), None);
        assert_eq!(sample(-5, Some(start), tol), None);
    }
}
