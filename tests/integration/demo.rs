//! Demo mode through the real binary: no configuration, live data, clean exit.

use crate::support;

use std::time::Duration;

use support::{Binary, Serves, wait_for};

fn demo_db_from(stderr: &str) -> Option<String> {
    stderr.lines().find(|l| l.contains("DEMO MODE")).and_then(|l| {
        let start = l.find("db=")? + 3;
        Some(l[start..].split_whitespace().next()?.to_owned())
    })
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()))
        .is_some_and(|state| state != 'Z')
}

#[test]
fn demo_serves_live_data_and_cleans_up_on_sigterm() {
    let mut bin = Binary::start(&[]);
    let first = bin.wait_all_ok();
    let agents = first["agents"].as_array().cloned().unwrap_or_default();
    assert!(!agents.is_empty(), "the demo has running agents: {first}");
    assert!(first["stages"].as_array().is_some_and(|s| !s.is_empty()));
    let counts = &first["queue"]["counts"];
    for s in ["queued", "running", "done", "failed", "cancelled"] {
        assert!(counts[s].as_u64().is_some_and(|n| n > 0), "demo has {s} jobs: {counts}");
    }
    assert!(first["queue"]["retries"]["retried_jobs"].as_u64().is_some_and(|n| n > 0));
    assert!(first["cost"]["aggregate"]["runs"].as_u64().is_some_and(|n| n > 0));

    // At least one agent's ticks move: real processes burn real CPU.
    wait_for(Duration::from_secs(20), "moving cpu_ticks", || {
        let later = bin.metrics();
        later["agents"].as_array()?.iter().any(|a| {
            let before = agents.iter().find(|b| b["run_id"] == a["run_id"]);
            matches!((before.and_then(|b| b["cpu_ticks"].as_u64()), a["cpu_ticks"].as_u64()), (Some(x), Some(y)) if y > x)
        }).then_some(())
    });
    let pids: Vec<u64> = bin.metrics()["agents"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["pid"].as_u64()).collect())
        .unwrap_or_default();
    assert!(!pids.is_empty());

    let status = bin.terminate(Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    let stderr = bin.stderr();
    let db = demo_db_from(&stderr).unwrap_or_else(|| panic!("demo mode announces its file: {stderr}"));
    assert!(!std::path::Path::new(&db).exists(), "{db} removed on exit");
    wait_for(Duration::from_secs(5), "agent processes gone", || pids.iter().all(|p| !alive(*p)).then_some(()));
}

/// SIGHUP ends demo mode cleanly: exit 0, and its directory (database,
/// `-wal`, `-shm`) removed, as on SIGTERM.
#[test]
fn sighup_ends_the_demo_and_removes_its_directory() {
    let mut bin = Binary::start(&[]);
    bin.wait_all_ok();
    let _ = std::process::Command::new("kill").arg("-HUP").arg(bin.child.id().to_string()).status();
    let status = wait_for(Duration::from_secs(10), "exit after SIGHUP", || bin.child.try_wait().ok().flatten());
    assert!(status.success(), "clean exit: {status}");
    let stderr = bin.stderr();
    let db = demo_db_from(&stderr).unwrap_or_else(|| panic!("demo mode announces its file: {stderr}"));
    let dir = std::path::Path::new(&db).parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    assert!(dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("orchmirror-demo-")), "{db}");
    assert!(!dir.exists(), "{} removed on SIGHUP", dir.display());
}
