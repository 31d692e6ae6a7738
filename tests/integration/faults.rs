//! Failure paths: a stalled actor, a dead actor, a locked database, a missing table.

use crate::support;

use std::time::{Duration, Instant};

use orchmirror::SectionName;
use serde_json::Value;
use support::{Binary, Fixture, InProcess, Serves, fast_settings, wait_for};

#[test]
fn a_stalled_actor_costs_only_its_section_and_one_timeout() {
    let fx = Fixture::one_of_each();
    let mut settings = fast_settings(&fx.path);
    settings.snapshot_timeout = Duration::from_millis(300);
    let mirror = InProcess::start(settings);
    mirror.wait_all_ok();

    // Block the agents actor's thread for far longer than the snapshot timeout.
    mirror.handle.stall_section(SectionName::AGENTS, Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let m = mirror.metrics();
    let took = started.elapsed();

    assert_eq!(m["sections"]["agents"]["status"], "timeout", "{m}");
    assert_eq!(m["agents"], Value::Null);
    let err = m["sections"]["agents"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("300 ms"), "names the configured timeout: {err}");
    for s in ["stages", "queue", "cost"] {
        assert_eq!(m["sections"][s]["status"], "ok", "{s}: {m}");
        assert!(!m[s].is_null(), "{s}");
    }
    // About one timeout, far from the 6 s stall (generous for a loaded machine).
    assert!(took < Duration::from_secs(3), "response took {took:?}");

    let h = support::get_json(&mirror.url("/health"));
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["sections"]["agents"]["status"], "timeout");
}

#[test]
fn a_dead_actor_is_unavailable_then_respawned() {
    let fx = Fixture::one_of_each();
    let mut settings = fast_settings(&fx.path);
    // A 1 s period: the watchdog waits about that long before re-spawning.
    settings.refresh = orchmirror::RefreshPeriods::uniform(Duration::from_millis(1000));
    let mirror = InProcess::start(settings);
    mirror.wait_all_ok();
    mirror.handle.kill_section(SectionName::COST);
    let m = wait_for(Duration::from_secs(5), "cost unavailable", || {
        let m = mirror.metrics();
        (m["sections"]["cost"]["status"] == "unavailable").then_some(m)
    });
    assert_eq!(m["cost"], Value::Null);
    assert!(m["sections"]["cost"]["error"].as_str().is_some_and(|e| e.contains("cost")));
    for s in ["stages", "queue", "agents"] {
        assert_eq!(m["sections"][s]["status"], "ok", "{s}");
    }
    let h = support::get_json(&mirror.url("/health"));
    assert_eq!(h["status"], "degraded");

    // The watchdog brings it back; /health counts the restart.
    let m = wait_for(Duration::from_secs(15), "cost ok again", || {
        let m = mirror.metrics();
        (m["sections"]["cost"]["status"] == "ok").then_some(m)
    });
    assert_eq!(m["cost"]["aggregate"]["runs"], 1);
    let h = support::get_json(&mirror.url("/health"));
    assert_eq!(h["restarts"]["cost"], 1, "{h}");
    assert_eq!(h["restarts"]["stages"], 0, "{h}");
}

#[test]
fn a_stopped_mirror_is_unavailable_and_stays_so() {
    let fx = Fixture::one_of_each();
    let mirror = InProcess::start(fast_settings(&fx.path));
    mirror.wait_all_ok();
    mirror.handle.stop();
    let m = wait_for(Duration::from_secs(5), "all unavailable", || {
        let m = mirror.metrics();
        support::SECTIONS.iter().all(|s| m["sections"][s]["status"] == "unavailable" && m[s].is_null()).then_some(m)
    });
    std::thread::sleep(Duration::from_millis(500));
    let later = mirror.metrics();
    assert_eq!(later["sections"]["queue"]["status"], "unavailable", "no restart after an explicit stop: {m}");
}

#[test]
fn a_locked_database_serves_stale_data_then_recovers() {
    let fx = Fixture::one_of_each(); // rollback-journal mode: an exclusive lock blocks readers
    let bin = fx.serve(&[]);
    let before = bin.wait_all_ok();

    let writer = fx.conn();
    writer.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    let m = wait_for(Duration::from_secs(10), "stale sections", || {
        let m = bin.metrics();
        support::SECTIONS.iter().all(|s| m["sections"][s]["status"] == "stale").then_some(m)
    });
    // The last good data is served, with the reason.
    assert_eq!(m["stages"][0]["work_item"], before["stages"][0]["work_item"]);
    assert_eq!(m["stages"].as_array().map(Vec::len), Some(1));
    assert_eq!(m["cost"]["aggregate"], before["cost"]["aggregate"]);
    let err = m["sections"]["queue"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("locked"), "says why: {err}");
    // A refresh fails fast, so a fresh request is not held up by the lock.
    let t = Instant::now();
    bin.metrics();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    writer.execute_batch("COMMIT;").expect("unlock");
    wait_for(Duration::from_secs(10), "recovery", || support::all_ok(&bin.metrics()).then_some(()));
}

#[test]
fn stale_data_older_than_max_stale_is_withdrawn() {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[("ORCH_MAX_STALE_MS", "1000")]);
    bin.wait_all_ok();
    let writer = fx.conn();
    writer.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    let m = wait_for(Duration::from_secs(10), "error after max stale", || {
        let m = bin.metrics();
        (m["sections"]["stages"]["status"] == "error").then_some(m)
    });
    assert_eq!(m["stages"], Value::Null);
    let e = &m["sections"]["stages"];
    assert!(e["error"].as_str().is_some_and(|s| s.contains("ORCH_MAX_STALE_MS")), "{e}");
    assert!(e["refreshed_at"].is_string(), "the last good refresh is still reported: {e}");
    writer.execute_batch("COMMIT;").expect("unlock");
    wait_for(Duration::from_secs(10), "recovery", || support::all_ok(&bin.metrics()).then_some(()));
}

#[test]
fn a_missing_table_errors_only_the_sections_that_need_it_and_logs_once() {
    let fx = Fixture::one_of_each();
    fx.exec("DROP TABLE agent_runs;");
    let bin = fx.serve(&[]);
    let m = wait_for(Duration::from_secs(10), "sections settled", || {
        let m = bin.metrics();
        (m["sections"]["stages"]["status"] == "ok" && m["sections"]["cost"]["status"] == "error").then_some(m)
    });
    assert_eq!(m["sections"]["queue"]["status"], "ok");
    for s in ["agents", "cost"] {
        assert_eq!(m["sections"][s]["status"], "error", "{s}");
        assert_eq!(m[s], Value::Null, "{s}");
        let e = m["sections"][s]["error"].as_str().unwrap_or_default();
        assert!(e.contains("agent_runs"), "{s}: names the table: {e}");
    }
    // Ten more failing refreshes: the error is logged once per change, not per tick.
    std::thread::sleep(Duration::from_millis(1000));
    let mut bin = bin;
    assert!(bin.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let log = bin.stderr();
    for s in ["agents", "cost"] {
        let n = log.lines().filter(|l| l.contains("refresh failed") && l.contains(&format!("section={s}"))).count();
        assert_eq!(n, 1, "{s}: logged {n} times:\n{log}");
    }
}

#[test]
fn a_database_that_is_not_sqlite_gives_errors_not_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "this is not a database, just some text that is long enough ".repeat(20)).expect("write");
    let db = path.display().to_string();
    let bin = Binary::start(&[("ORCH_DB_PATH", &db), ("ORCH_REFRESH_MS", "100")]);
    let m = wait_for(Duration::from_secs(10), "error sections", || {
        let m = bin.metrics();
        (m["sections"]["queue"]["status"] == "error").then_some(m)
    });
    assert!(m["sections"]["queue"]["error"].as_str().is_some_and(|e| e.contains("not a database")), "{m}");
}

#[test]
fn a_replaced_file_is_noticed_and_served() {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[]);
    assert_eq!(bin.wait_all_ok()["stages"].as_array().map(Vec::len), Some(1));

    // A new file, written aside then renamed over the path (how tools replace files).
    let next = Fixture::new();
    next.exec("INSERT INTO tasks (work_item_id, stage) VALUES ('NEW-1', 'develop'), ('NEW-2', 'review');");
    std::fs::rename(&next.path, &fx.path).expect("rename over");
    wait_for(Duration::from_secs(10), "the new file's rows", || {
        let m = bin.metrics();
        (m["stages"][0]["work_item"] == "NEW-1" && m["stages"].as_array().map(Vec::len) == Some(2)).then_some(())
    });
}

#[test]
fn a_deleted_file_goes_stale_then_error_and_is_picked_up_when_it_returns() {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[("ORCH_MAX_STALE_MS", "1500")]);
    bin.wait_all_ok();
    let aside = fx.dir.path().join("aside.sqlite");
    std::fs::rename(&fx.path, &aside).expect("move away");

    let stale = wait_for(Duration::from_secs(10), "stale", || {
        let m = bin.metrics();
        (m["sections"]["stages"]["status"] == "stale").then_some(m)
    });
    let err = stale["sections"]["stages"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("gone"), "{err}");
    assert_eq!(stale["stages"][0]["work_item"], "ORCH-1", "last good data is served");
    wait_for(Duration::from_secs(10), "error after ORCH_MAX_STALE_MS", || {
        let m = bin.metrics();
        (m["sections"]["stages"]["status"] == "error" && m["stages"].is_null()).then_some(())
    });
    // The process keeps serving, and picks the file up again when it returns.
    std::fs::rename(&aside, &fx.path).expect("move back");
    wait_for(Duration::from_secs(10), "ok again", || support::all_ok(&bin.metrics()).then_some(()));
}

#[test]
fn a_wal_database_with_a_busy_writer_never_fails_a_refresh() {
    let fx = Fixture::one_of_each();
    let writer = fx.conn();
    writer.pragma_update(None, "journal_mode", "WAL").expect("wal");
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "20")]);
    bin.wait_all_ok();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                writer.execute("INSERT INTO jobs (agent, status) VALUES ('w', 'queued')", []).expect("commit");
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            n
        })
    };
    let start = Instant::now();
    let mut seen = 0;
    let mut depth = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let m = bin.metrics();
        assert!(support::all_ok(&m), "a refresh failed under a WAL writer: {}", m["sections"]);
        depth = m["queue"]["depth"].as_u64().unwrap_or(0);
        seen += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let commits = w.join().expect("writer");
    assert!(seen > 10 && commits > 50 && depth > 0, "seen {seen}, commits {commits}, depth {depth}");
}

#[test]
fn a_hanging_query_is_interrupted_and_the_section_goes_stale_then_recovers() {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    // `tasks` becomes a view that never finishes: a real statement that hangs.
    fx.exec(
        "ALTER TABLE tasks RENAME TO tasks_real;
         CREATE VIEW tasks AS
           WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)
           SELECT x AS id, 'w' AS work_item_id, NULL AS repo, 'review' AS stage, NULL AS updated_at
             FROM c WHERE x < 0;",
    );
    let started = Instant::now();
    // The bound for a 100 ms period is 5 s: the statement is interrupted then.
    let m = wait_for(Duration::from_secs(20), "stages stale after the hang", || {
        let m = bin.metrics();
        let s = &m["sections"]["stages"];
        (s["status"] == "stale" && s["error"].as_str().is_some_and(|e| e.contains("interrupt"))).then_some(m)
    });
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "interrupted at the bound, not before: {:?}",
        started.elapsed()
    );
    assert_eq!(m["stages"][0]["work_item"], "ORCH-1", "last good data is served");
    for s in ["queue", "agents", "cost"] {
        assert_eq!(m["sections"][s]["status"], "ok", "{s} is not held up");
    }
    fx.exec("DROP VIEW tasks; ALTER TABLE tasks_real RENAME TO tasks;");
    wait_for(Duration::from_secs(20), "ok again", || support::all_ok(&bin.metrics()).then_some(()));
}

/// Puts something at a path.
type Make = dyn Fn(&std::path::Path);

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// A FIFO, a directory or a device renamed over the path: opening a FIFO
/// would block a thread forever and the others give misleading errors. Each
/// is an error naming the file (never its absolute path), no thread is left
/// behind, and the real file is served again when it returns.
#[test]
fn a_path_that_is_not_a_regular_file_is_an_error_that_leaves_nothing_behind() {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "100")]);
    bin.wait_all_ok();
    let before = threads(bin.child.id());
    let aside = fx.dir.path().join("aside.sqlite");
    std::fs::rename(&fx.path, &aside).expect("move away");
    let dir = fx.dir.path().display().to_string();
    let kinds: [(&str, &Make); 3] = [
        ("a FIFO", &|p| {
            let ok = std::process::Command::new("mkfifo").arg(p).status().is_ok_and(|s| s.success());
            assert!(ok, "mkfifo");
        }),
        ("a directory", &|p| std::fs::create_dir(p).expect("mkdir")),
        ("/dev/zero", &|p| std::os::unix::fs::symlink("/dev/zero", p).expect("symlink")),
    ];
    for (what, make) in kinds {
        let odd = fx.dir.path().join("odd");
        make(&odd);
        std::fs::rename(&odd, &fx.path).unwrap_or_else(|e| panic!("{what}: rename: {e}"));
        let m = wait_for(Duration::from_secs(10), what, || {
            let m = bin.metrics();
            m["sections"]["queue"]["error"].as_str().is_some_and(|e| e.contains("not a regular file")).then_some(m)
        });
        for (name, state) in m["sections"].as_object().expect("sections") {
            let err = state["error"].as_str().unwrap_or_default();
            assert!(!err.contains(&dir), "{what}: {name}'s error carries the absolute path: {err}");
        }
        let health = support::get(&bin.url("/health")).2;
        assert!(!health.contains(&dir), "{what}: /health carries the absolute path: {health}");
        if std::fs::symlink_metadata(&fx.path).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir(&fx.path).expect("rmdir");
        } else {
            std::fs::remove_file(&fx.path).expect("rm");
        }
    }
    std::fs::rename(&aside, &fx.path).expect("move back");
    wait_for(Duration::from_secs(10), "ok again", || support::all_ok(&bin.metrics()).then_some(()));
    let after = threads(bin.child.id());
    assert!(after <= before + 2, "threads: {before} before, {after} after");
}

/// Issue 25, item 6: a database whose schema differs from the orchestrator's
/// (a column or a table missing) gets one line per section saying what is
/// missing and where the schema the mirror reads is described: no SQL dump.
#[test]
fn a_missing_table_or_column_is_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    let db = rusqlite::Connection::open(&path).expect("open");
    db.execute_batch(
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY, work_item_id TEXT, repo TEXT, stage TEXT, updated_at TEXT);
         CREATE TABLE jobs (id INTEGER PRIMARY KEY, task_id INTEGER, repo TEXT, agent TEXT, state TEXT,
                            attempts INTEGER, created_at TEXT, started_at TEXT, finished_at TEXT);",
    )
    .expect("schema");
    drop(db);
    let bin = Binary::start(&[("ORCH_DB_PATH", &path.display().to_string())]);
    let errors = wait_for(Duration::from_secs(20), "the sections to fail", || {
        let m = support::get_json(&bin.url("/metrics"));
        let error = |s: &str| m["sections"][s]["error"].as_str().map(str::to_owned);
        Some((error("queue")?, error("agents")?, error("cost")?))
    });
    let (queue, agents, cost) = errors;
    assert!(queue.starts_with("no such column: status"), "{queue}");
    for e in [&agents, &cost] {
        assert!(e.contains("no such table: agent_runs") || e.contains("no such column: status"), "{e}");
    }
    for e in [&queue, &agents, &cost] {
        assert!(!e.contains('\n') && !e.contains("SELECT"), "one line, no SQL: {e:?}");
        assert!(e.contains("README, \"The database it reads\""), "{e}");
    }
    let health = support::get_json(&bin.url("/health"));
    assert_eq!(health["status"], "degraded");
}
