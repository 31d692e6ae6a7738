//! A read-only mirror never leaves `-wal`/`-shm` files its writer cannot
//! write (issue 14, item 1). Real processes under two uids (`setpriv`): the
//! orchestrator's writer runs as one uid, the mirror as another, in a
//! directory both can write, on a WAL database whose writer closed last.
//!
//! The writer is this test binary run again as the other uid (the helper test
//! below), so the test needs nothing beyond root and `setpriv`.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use support::{Serves, wait_for};

pub(super) const WRITER_UID: &str = "4101";
pub(super) const MIRROR_UID: &str = "4102";
const HELPER_ENV: &str = "ORCHMIRROR_TEST_WRITER";
const HELPER_BIN: &str = env!("CARGO_BIN_EXE_orchmirror-test-writer");

/// Whether this machine can run processes as other uids; with `CI=true` it must.
pub(super) fn can_switch_uids() -> bool {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if root && setpriv {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: these tests need root and setpriv (util-linux), found root={root} setpriv={setpriv}"
    );
    eprintln!("skipped: needs root and setpriv to run the writer and the mirror as two other uids");
    false
}

pub(super) fn as_uid(uid: &str, program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups"]).arg(program);
    cmd
}

/// A directory every uid can write, holding a WAL database created by the
/// writer's uid whose last connection has closed (so no -wal, no -shm).
pub(super) fn shared_wal_database() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
    let path = dir.path().join("orch.sqlite");
    {
        let c = rusqlite::Connection::open(&path).expect("create");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.execute_batch(orchmirror::SCHEMA_SQL).expect("schema");
        c.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("row");
    }
    let uid: u32 = WRITER_UID.parse().expect("uid");
    std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown db");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod db");
    assert_no_side_files(&path);
    (dir, path)
}

pub(super) fn side(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

fn assert_no_side_files(path: &Path) {
    for s in ["-wal", "-shm"] {
        assert!(!side(path, s).exists(), "{} exists", side(path, s).display());
    }
}

/// The orchestrator's writer as the writer's uid: opens the database, commits
/// one queued job, and, while held, commits another each time it is told to.
struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Writer {
    fn start(path: &Path) -> Writer {
        let exe = std::path::PathBuf::from(HELPER_BIN);
        let mut child = as_uid(WRITER_UID, &exe)
            .env(HELPER_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the writer");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut w = Writer { child, stdin, lines };
        w.expect_commit();
        w
    }

    /// Waits for the helper's report of one commit, failing with its error.
    fn expect_commit(&mut self) {
        for line in self.lines.by_ref() {
            let line = line.expect("writer output");
            if line.contains("writer: committed") {
                return;
            }
            assert!(!line.contains("writer: failed"), "the orchestrator's write failed: {line}");
        }
        panic!("the writer exited without committing: {:?}", self.child.wait());
    }

    fn commit(&mut self) {
        let stdin = self.stdin.as_mut().expect("writer stdin");
        stdin.write_all(b"commit\n").and_then(|()| stdin.flush()).expect("tell the writer");
        self.expect_commit();
    }

    /// Closes the writer's connection (it was the orchestrator's last).
    fn close(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("writer exit");
        assert!(status.success(), "writer exited with {status}");
    }
}

/// One write as a fresh orchestrator process would make it.
fn write_once(path: &Path) {
    Writer::start(path).close();
}

pub(super) fn mirror_as(uid: &str, path: &Path) -> support::Binary {
    mirror_as_with_period(uid, path, "100")
}

/// The mirror as `uid` on `path`, every section refreshing each `period_ms`.
pub(super) fn mirror_as_with_period(uid: &str, path: &Path, period_ms: &str) -> support::Binary {
    let port = support::free_port();
    let child = as_uid(uid, Path::new(env!("CARGO_BIN_EXE_orchmirror")))
        .env_clear()
        .env("ORCH_DB_PATH", path)
        .env("ORCH_BIND", format!("127.0.0.1:{port}"))
        .env("ORCH_REFRESH_MS", period_ms)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the mirror");
    let mirror = support::Binary { child, base: format!("http://127.0.0.1:{port}"), port };
    wait_for(Duration::from_secs(20), "the mirror to listen", || {
        support::client().get(mirror.url("/health")).send().ok().map(|_| ())
    });
    mirror
}

fn queue(mirror: &support::Binary) -> serde_json::Value {
    let m = mirror.metrics();
    m["sections"]["queue"].clone()
}

#[test]
fn the_mirror_never_creates_wal_files_the_writer_cannot_write() {
    if !can_switch_uids() {
        return;
    }
    let (_dir, path) = shared_wal_database();
    let mut mirror = mirror_as(MIRROR_UID, &path);

    // No writer has the database open: the mirror says why it does not read it, and creates nothing.
    let q = wait_for(Duration::from_secs(15), "the queue section's error", || {
        let q = queue(&mirror);
        (q["status"] == "error").then_some(q)
    });
    let err = q["error"].as_str().unwrap_or_default();
    assert!(err.contains("WAL") && err.contains("orch.sqlite") && err.contains("waits"), "clear error: {err}");
    assert!(!err.contains(&path.parent().expect("dir").display().to_string()), "names the file only: {err}");
    std::thread::sleep(Duration::from_millis(500)); // several more refreshes
    assert_no_side_files(&path);

    // The orchestrator starts: its writes succeed, and the mirror reads once the files are in place.
    let mut writer = Writer::start(&path);
    let m = wait_for(Duration::from_secs(15), "the mirror to read the live database", || {
        let m = mirror.metrics();
        (m["queue"]["depth"] == 2).then_some(m)
    });
    assert_eq!(m["sections"]["queue"]["status"], "ok");
    writer.commit();
    wait_for(Duration::from_secs(15), "the next commit", || (queue(&mirror)["status"] == "ok").then_some(()));
    wait_for(Duration::from_secs(15), "depth 3", || (mirror.metrics()["queue"]["depth"] == 3).then_some(()));
    for s in ["-wal", "-shm"] {
        let owner = std::fs::metadata(side(&path, s)).expect("side file").uid();
        assert_eq!(owner.to_string(), WRITER_UID, "{s} belongs to the writer");
    }

    // The writer closes while the mirror reads, then the mirror exits: a new writer still writes.
    writer.close();
    let _ = mirror.terminate(Duration::from_secs(5));
    write_once(&path);
    write_once(&path);
}

/// The control: a plain read-only SQLite reader as another uid (what the
/// mirror did before) leaves files that make the writer fail, so the test
/// above can tell the difference.
#[test]
fn control_a_plain_read_only_reader_breaks_the_writer() {
    if !can_switch_uids() {
        return;
    }
    let (_dir, path) = shared_wal_database();
    let exe = std::path::PathBuf::from(HELPER_BIN);
    let out =
        as_uid(MIRROR_UID, &exe).env(HELPER_ENV, format!("read:{}", path.display())).output().expect("run the reader");
    assert!(out.status.success(), "reader: {}", String::from_utf8_lossy(&out.stderr));
    let wal = std::fs::metadata(side(&path, "-wal")).expect("the reader created -wal");
    assert_eq!(wal.uid().to_string(), MIRROR_UID);

    let out = as_uid(WRITER_UID, &exe).env(HELPER_ENV, &path).stdin(Stdio::null()).output().expect("run the writer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("writer: failed") && stdout.contains("readonly"), "writer output: {stdout}");

    // The mirror, as the uid that owns those files, does not open the
    // database in that state: every section says why, /health is degraded,
    // and the refusals are counted.
    let mirror = mirror_as(MIRROR_UID, &path);
    let q = wait_for(Duration::from_secs(15), "the queue section's error", || {
        let q = queue(&mirror);
        (q["status"] == "error").then_some(q)
    });
    let err = q["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("orch.sqlite-wal") && err.contains(&format!("uid {MIRROR_UID}")) && err.contains("chown"),
        "names the files, whose they are and the remedy: {err}"
    );
    let health = support::get_json(&mirror.url("/health"));
    assert_eq!(health["status"], "degraded", "{health}");
    let (_, _, text) = support::get(&mirror.url("/metrics/prometheus"));
    let refusals = text
        .lines()
        .find_map(|l| l.strip_prefix("orchmirror_wal_guard_refusals_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(refusals.is_some_and(|n| n >= 1.0), "refusals counted: {refusals:?}");
}

/// The race (issue 24, item 1): a writer that opens, commits and closes in a
/// loop removes the side files each time it closes. A mirror that saw them
/// present and opened an instant later used to create them again as its own
/// uid, and from then on every write of the orchestrator failed. Many mirror
/// starts beside such a writer: not one write may fail, and the side files,
/// whenever they exist, are the writer's.
#[test]
fn mirror_starts_beside_a_writer_that_closes_in_a_loop_never_break_it() {
    if !can_switch_uids() {
        return;
    }
    const STARTS: usize = 30;
    let (_dir, path) = shared_wal_database();
    let exe = std::path::PathBuf::from(HELPER_BIN);
    let mut writer = as_uid(WRITER_UID, &exe)
        .env(HELPER_ENV, format!("loop:{}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the looping writer");
    let stdin = writer.stdin.take();
    let mut lines = BufReader::new(writer.stdout.take().expect("stdout")).lines();
    let started = lines.by_ref().map_while(Result::ok).any(|l| l.contains("writer: looping"));
    assert!(started, "the writer started");

    let mut opened = 0;
    for _ in 0..STARTS {
        let mut mirror = mirror_as(MIRROR_UID, &path);
        // Until every section has read (each opened its connection once) or
        // a generous while has passed: each open is one chance to lose the race.
        let all = support::wait_for_or_none(Duration::from_secs(5), || {
            let m = mirror.metrics();
            support::SECTIONS.iter().all(|s| m["sections"][*s]["status"] == "ok").then_some(())
        });
        opened += usize::from(all.is_some());
        let _ = mirror.terminate(Duration::from_secs(5));
        for s in ["-wal", "-shm"] {
            if let Ok(meta) = std::fs::metadata(side(&path, s)) {
                assert_eq!(meta.uid().to_string(), WRITER_UID, "{s} belongs to the writer");
            }
        }
    }
    drop(stdin); // the writer stops at end of input and reports
    let report: Vec<String> = lines.map_while(Result::ok).collect();
    let status = writer.wait().expect("writer exit");
    assert!(status.success(), "writer exited with {status}: {report:?}");
    let last = report.iter().rev().find(|l| l.contains("writer: done")).cloned().unwrap_or_default();
    assert!(last.contains(" 0 failed"), "every write of the orchestrator succeeded: {report:?}");
    assert!(opened * 2 >= STARTS, "most starts read the database ({opened} of {STARTS}): {report:?}");
}

/// The writer helper bin (`tests/helpers/writer.rs`) commits, run directly
/// on a database of its own.
#[test]
fn the_writer_helper_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("self.sqlite");
    rusqlite::Connection::open(&path).and_then(|c| c.execute_batch(orchmirror::SCHEMA_SQL)).expect("schema");
    let out = Command::new(HELPER_BIN).env(HELPER_ENV, &path).stdin(Stdio::null()).output().expect("run the helper");
    assert!(String::from_utf8_lossy(&out.stdout).contains("writer: committed"));
    let n: i64 = rusqlite::Connection::open(&path)
        .and_then(|c| c.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)))
        .expect("count");
    assert_eq!(n, 1);
}
