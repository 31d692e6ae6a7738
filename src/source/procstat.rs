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

/// This process's own resource use, as every Prometheus client library
/// exports it (`process_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessUsage {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Reads [`ProcessUsage`] from `/proc/self`; `None` off Linux or when it cannot be read.
pub(crate) fn own_usage() -> Option<ProcessUsage> {
    #[cfg(target_os = "linux")]
    {
        let me = procfs::process::Process::myself().ok()?;
        let stat = me.stat().ok()?;
        let ticks = clk_tck()?.max(1) as f64;
        let boot = procfs::boot_time_secs().ok()? as f64;
        let max_fds = match me.limits().ok()?.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(n) => Some(n),
            procfs::process::LimitValue::Unlimited => None,
        };
        Some(ProcessUsage {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_memory_bytes: stat.rss * procfs::page_size(),
            virtual_memory_bytes: stat.vsize,
            open_fds: me.fd_count().ok()? as u64,
            max_fds,
            start_time_seconds: boot + stat.starttime as f64 / ticks,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Samples `pid`'s CPU ticks if it is alive and started within `tolerance` of `run_started_at`.
///
/// `Ok(None)` for a gone process, a zombie, a kernel thread, a pid whose start
/// time does not match the run (reused pid), a process this user may not
/// inspect, an unknown `run_started_at` (identity cannot be checked), or off
/// Linux: that agent has no ticks (README, "The envelope": `null` means gone or reused).
/// An error when `/proc` could not be read for another reason (out of file
/// descriptors or memory): that says nothing about the process, so it must
/// not be served as `null`.
pub fn sample(
    pid: i32,
    run_started_at: Option<DateTime<Utc>>,
    tolerance: Duration,
) -> Result<Option<CpuSample>, std::io::Error> {
    #[cfg(target_os = "linux")]
    {
        match run_started_at {
            Some(at) => linux::sample(pid, at, tolerance),
            None => Ok(None),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, run_started_at, tolerance);
        Ok(None)
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;

    /// `PF_KTHREAD` in `/proc/<pid>/stat`'s flags.
    const PF_KTHREAD: u32 = 0x0020_0000;

    /// Whether a `/proc` read failed because of the process (gone, not ours
    /// to see), as opposed to this process's own limits.
    fn about_the_process(e: &procfs::ProcError) -> bool {
        match e {
            procfs::ProcError::NotFound(_)
            | procfs::ProcError::PermissionDenied(_)
            | procfs::ProcError::Incomplete(_) => true,
            procfs::ProcError::Io(e, _) => {
                matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied)
                    || e.raw_os_error() == Some(3) // ESRCH: the process exited while being read
            }
            _ => false,
        }
    }

    fn fail(e: procfs::ProcError) -> std::io::Error {
        std::io::Error::other(format!("reading /proc: {e}"))
    }

    pub(super) fn sample(
        pid: i32,
        run_started_at: DateTime<Utc>,
        tolerance: Duration,
    ) -> Result<Option<CpuSample>, std::io::Error> {
        let stat = match procfs::process::Process::new(pid).and_then(|p| p.stat()) {
            Ok(stat) => stat,
            Err(e) if about_the_process(&e) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let sampled_at = Utc::now();
        // Zombies and dead tasks have no live agent behind them; kernel threads never are one.
        if matches!(stat.state, 'Z' | 'X' | 'x') || stat.flags & PF_KTHREAD != 0 {
            return Ok(None);
        }
        let tps = procfs::ticks_per_second();
        let boot = procfs::boot_time_secs().map_err(fail)?;
        Ok(identify(stat, sampled_at, tps, boot, run_started_at, tolerance))
    }

    fn identify(
        stat: procfs::process::Stat,
        sampled_at: DateTime<Utc>,
        tps: u64,
        boot: u64,
        run_started_at: DateTime<Utc>,
        tolerance: Duration,
    ) -> Option<CpuSample> {
        let boot_secs = i64::try_from(boot).ok()?;
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
        assert!(sample(pid, Some(start), tol).is_ok_and(|s| s.is_some()));
        assert!(sample(pid, Some(start - chrono::Duration::seconds(3600)), tol).is_ok_and(|s| s.is_none()));
        assert!(sample(pid, None, tol).is_ok_and(|s| s.is_none()));
        assert!(sample(-5, Some(start), tol).is_ok_and(|s| s.is_none()));
    }
}
