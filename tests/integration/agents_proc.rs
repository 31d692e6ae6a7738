//! `cpu_ticks` from real processes: a live child, a dead pid, a reused pid.

use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Duration as CDuration, Utc};
use serde_json::Value;
use support::{Fixture, Serves, wait_for};

use support::sqlite_ts;

/// A child that burns CPU so its tick count moves.
fn busy_child() -> std::process::Child {
    Command::new("sh").arg("-c").arg("while :; do :; done").stdin(Stdio::null()).spawn().expect("spawn busy child")
}

fn agent(m: &Value, job_id: i64) -> Value {
    m["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["job_id"] == job_id).cloned())
        .unwrap_or_else(|| panic!("no agent for job {job_id}: {m}"))
}

#[test]
fn live_dead_and_reused_pids() {
    let mut live = busy_child();
    // A process that has exited and been reaped: its pid is gone.
    let mut dead = Command::new("true").spawn().expect("spawn true");
    let dead_pid = dead.id();
    dead.wait().expect("reap");
    // A live process whose start time is an hour away from the run's: a reused pid.
    let mut reused = Command::new("sleep").arg("60").spawn().expect("spawn sleep");

    let now = Utc::now();
    let fx = Fixture::new();
    fx.exec(&format!(
        "INSERT INTO jobs (id, agent, status, started_at) VALUES
            (1, 'developer', 'running', '{now}'), (2, 'developer', 'running', '{now}'),
            (3, 'developer', 'running', '{now}');
         INSERT INTO agent_runs (id, job_id, agent, pid, started_at) VALUES
            (1, 1, 'developer', {live}, '{now}'),
            (2, 2, 'developer', {dead_pid}, '{now}'),
            (3, 3, 'developer', {reused}, '{hour_ago}');",
        now = sqlite_ts(now),
        live = live.id(),
        reused = reused.id(),
        hour_ago = sqlite_ts(now - CDuration::hours(1)),
    ));
    let bin = fx.serve(&[]);
    let first = bin.wait_all_ok();
    let a = agent(&first, 1);
    assert_eq!(a["pid"], live.id());
    let t1 = a["cpu_ticks"].as_u64().unwrap_or_else(|| panic!("live child has ticks: {a}"));
    let s1 = support::ts(&a["cpu_sampled_at"]);
    assert_eq!(a["cpu_sampled_at"].as_str().map(str::len), Some(24), "milliseconds and Z");

    for (job, why) in [(2, "dead pid"), (3, "reused pid")] {
        let e = agent(&first, job);
        assert_eq!(e["cpu_ticks"], Value::Null, "{why}: {e}");
        assert_eq!(e["cpu_sampled_at"], Value::Null, "{why}: {e}");
        assert!(e["pid"].is_u64(), "{why}: the pid itself is still reported: {e}");
    }
    assert_eq!(first["sections"]["agents"]["error"], Value::Null);

    // The busy child accumulates ticks; a later sample is larger and later.
    let (t2, s2) = wait_for(Duration::from_secs(20), "cpu_ticks to grow", || {
        let a = agent(&bin.metrics(), 1);
        let t = a["cpu_ticks"].as_u64()?;
        (t > t1).then(|| (t, support::ts(&a["cpu_sampled_at"])))
    });
    assert!(t2 > t1 && s2 > s1);

    // Once the process is gone, its ticks are null and the section stays ok.
    live.kill().expect("kill");
    live.wait().expect("reap");
    wait_for(Duration::from_secs(10), "null ticks after the child died", || {
        let m = bin.metrics();
        (agent(&m, 1)["cpu_ticks"].is_null() && m["sections"]["agents"]["status"] == "ok").then_some(())
    });
    let _ = reused.kill();
    let _ = reused.wait();
}

#[test]
fn a_zombie_has_no_ticks() {
    // A child that is never reaped stays a zombie while we hold it.
    let mut zombie = Command::new("true").spawn().expect("spawn");
    let pid = zombie.id();
    wait_for(Duration::from_secs(5), "zombie state", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        (state == 'Z').then_some(())
    });
    let now = sqlite_ts(Utc::now());
    let fx = Fixture::new();
    fx.exec(&format!(
        "INSERT INTO jobs (id, agent, status, started_at) VALUES (1, 'a', 'running', '{now}');
         INSERT INTO agent_runs (id, job_id, agent, pid, started_at) VALUES (1, 1, 'a', {pid}, '{now}');"
    ));
    let bin = fx.serve(&[]);
    let m = bin.wait_all_ok();
    assert_eq!(agent(&m, 1)["cpu_ticks"], Value::Null, "{m}");
    zombie.wait().expect("reap");
}

/// Start time of `pid` as wall-clock UTC, from /proc (boot time + starttime ticks).
fn start_time(pid: u32) -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let start_ticks: i64 = fields.get(19)?.parse().ok()?; // field 22 overall
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let tps = i64::try_from(orchmirror::test_util::clk_tck()?).ok()?.max(1);
    DateTime::from_timestamp(btime + start_ticks / tps, 0)
}

/// A pid whose flags say it is a kernel thread (PF_KTHREAD), if any is visible.
fn kernel_thread() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let flags: u64 = stat.rsplit_once(") ")?.1.split_whitespace().nth(6)?.parse().ok()?;
        (flags & 0x0020_0000 != 0).then_some(pid)
    })
}

#[test]
fn kernel_threads_and_impossible_pids_have_no_ticks() {
    let pid_max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304);
    let now = Utc::now();
    let mut rows = vec![(pid_max + 1, now), (i64::from(i32::MAX) + 10, now), (0, now)];
    // A kernel thread, with the run's start set to the thread's own so that
    // only the kernel-thread check can refuse it.
    let kthread = kernel_thread().and_then(|p| Some((i64::from(p), start_time(p)?)));
    if let Some(k) = kthread {
        rows.push(k);
    } else {
        eprintln!("no kernel thread is visible in this pid namespace; that case is not exercised");
    }
    let fx = Fixture::new();
    for (i, (pid, started)) in rows.iter().enumerate() {
        fx.exec(&format!(
            "INSERT INTO jobs (id, agent, status, started_at) VALUES ({id}, 'a', 'running', datetime('now'));
             INSERT INTO agent_runs (job_id, agent, pid, started_at) VALUES ({id}, 'a', {pid}, '{s}');",
            id = i + 1,
            s = sqlite_ts(*started)
        ));
    }
    let bin = fx.serve(&[("ORCH_PID_START_TOLERANCE_S", "5")]);
    let m = bin.wait_all_ok();
    let agents = m["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), rows.len());
    for a in agents {
        assert_eq!(a["cpu_ticks"], Value::Null, "{a}");
    }
    assert_eq!(agents[0]["pid"], pid_max + 1, "a pid above pid_max is still reported as stored");
    assert_eq!(agents[1]["pid"], Value::Null, "beyond any possible pid");
    assert_eq!(agents[2]["pid"], Value::Null, "pid 0 is not a process");
    assert_eq!(m["sections"]["agents"]["error"], Value::Null);
}
