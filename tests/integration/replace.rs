//! A database replaced by rename while the mirror runs stays intact (issue
//! 33, item 1). The orchestrator's writer and the mirror run as two uids
//! (`setpriv`), and the operator's procedures run as the writer's uid:
//! commit and close, make a new file (`VACUUM INTO`, the backup API, a copy
//! of an earlier backup), rename it over the path, then `PRAGMA
//! integrity_check`. A reader that keeps its connection open keeps the old
//! file's `-wal` on disk, and SQLite then applies it to the new file; the
//! control shows that with a plain held reader, so the check can fail.

use crate::support;
use crate::wal_ownership::{
    MIRROR_UID, WRITER_UID, as_uid, can_switch_uids, mirror_as_with_period, shared_wal_database, side,
};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Serves, wait_for};

const HELPER_ENV: &str = "ORCHMIRROR_TEST_REPLACE";
const HELPER_BIN: &str = env!("CARGO_BIN_EXE_orchmirror-test-replace");

/// The helper bin (`tests/helpers/replace.rs`), as the writer's uid, doing `what`.
fn as_writer(what: &str) -> Command {
    let mut cmd = as_uid(WRITER_UID, Path::new(HELPER_BIN));
    cmd.env(HELPER_ENV, what);
    cmd
}

/// Runs one helper step as the writer and returns its report line.
fn step(what: &str) -> String {
    let out = as_writer(what).stdin(Stdio::null()).output().expect("run the helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.find("helper: ").map(|i| l[i..].to_owned())).unwrap_or_default();
    assert!(out.status.success() && !line.is_empty(), "{what}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    line
}

/// A directory every uid can write, and a WAL database in it owned by the
/// writer, with enough history (rows of many sizes, deletions) that a
/// `VACUUM` lays its pages out differently.
fn database() -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = shared_wal_database();
    for round in 0..20 {
        step(&format!("write:{round}:{}", path.display()));
    }
    (dir, path)
}

fn mirror(path: &Path, period_ms: &str) -> support::Binary {
    mirror_as_with_period(MIRROR_UID, path, period_ms)
}

/// How the operator makes the new file.
#[derive(Debug, Clone, Copy)]
enum How {
    /// `VACUUM INTO` from the database (its own connection closes last).
    Vacuum,
    /// The backup API from the database (likewise).
    BackupApi,
    /// A copy of an earlier backup: nothing opens the database first.
    RestoreCopy,
}

/// The orchestrator's session: the round's rows, small commits for 200 ms,
/// then, `linger_ms` later, its close.
fn session(path: &Path, round: usize, linger_ms: u64) {
    step(&format!("session:{round}:{linger_ms}:{}", path.display()));
}

/// The operator makes the new file by `how`, renames it over the path and
/// checks it; returns the check's report.
fn replace(path: &Path, how: How, backup: &Path) -> String {
    let new = path.with_file_name("new.sqlite");
    match how {
        How::Vacuum => drop(step(&format!("vacuum:{}:{}", path.display(), new.display()))),
        How::BackupApi => drop(step(&format!("backup:{}:{}", path.display(), new.display()))),
        How::RestoreCopy => {
            std::fs::copy(backup, &new).expect("copy the backup");
            let uid: u32 = WRITER_UID.parse().expect("uid");
            std::os::unix::fs::chown(&new, Some(uid), Some(uid)).expect("chown");
        }
    }
    std::fs::rename(&new, path).expect("rename over the database");
    step(&format!("check:{}", path.display()))
}

fn wal_bytes(path: &Path) -> Option<u64> {
    std::fs::metadata(side(path, "-wal")).map(|m| m.len()).ok()
}

/// What failed before: the mirror's idle connections kept the `-wal` after
/// the orchestrator closed, so every file renamed over the path afterwards
/// was read with it. Now a close that does not fall within one of the
/// mirror's reads removes the `-wal` as it would without the mirror, and
/// each procedure of the issue, as it is, leaves an intact file. (The
/// sections' periods are long, so the mirror reads only when a commit wakes
/// it, and the close comes a second after the last commit.)
#[test]
fn a_file_renamed_over_the_database_after_the_writer_closed_stays_intact() {
    if !can_switch_uids() {
        return;
    }
    let (dir, path) = database();
    let backup = dir.path().join("backup.sqlite");
    step(&format!("backup:{}:{}", path.display(), backup.display()));
    let mut mirror = mirror(&path, "60000");
    let mut round = 100;
    for how in [How::Vacuum, How::BackupApi, How::RestoreCopy] {
        for _ in 0..3 {
            round += 1;
            // The orchestrator runs (the mirror reads it: the queue shows its rows) and stops.
            session(&path, round, 1000);
            assert_eq!(wal_bytes(&path), None, "{how:?}, round {round}: the writer's close removed the -wal");
            let report = replace(&path, how, &backup);
            assert!(report.contains("integrity ok;"), "{how:?}, round {round}: {report}");
        }
    }
    let m = mirror.metrics();
    assert!(m["queue"]["depth"].as_u64().is_some_and(|d| d > 0), "the mirror read the sessions: {m}");
    let _ = mirror.terminate(Duration::from_secs(5));
}

/// README's procedure beside a mirror that reads all the time (20 ms
/// periods, an orchestrator that closes right after its last commit, so its
/// close often falls within a read): `PRAGMA wal_checkpoint(TRUNCATE)` after
/// the orchestrator stopped, then any procedure, leaves an intact file.
#[test]
fn readme_procedure_keeps_a_renamed_file_intact_beside_a_busy_mirror() {
    if !can_switch_uids() {
        return;
    }
    let (dir, path) = database();
    let backup = dir.path().join("backup.sqlite");
    step(&format!("backup:{}:{}", path.display(), backup.display()));
    let mut mirror = mirror(&path, "20");
    let mut round = 200;
    for how in [How::Vacuum, How::BackupApi, How::RestoreCopy] {
        for _ in 0..3 {
            round += 1;
            session(&path, round, 0);
            let done = step(&format!("checkpoint:{}", path.display()));
            assert!(done.contains("checkpointed (0, 0, 0)"), "the checkpoint completes: {done}");
            let report = replace(&path, how, &backup);
            assert!(report.contains("integrity ok;"), "{how:?}, round {round}: {report}");
        }
    }
    // The orchestrator starts again on the new file, and the mirror reads that file.
    session(&path, round + 1, 0);
    let report = step(&format!("check:{}", path.display()));
    let queued: u64 = report
        .split("queued ")
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the check reports the queued jobs: {report}"));
    let mut orchestrator = as_writer(&format!("serve:{}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the orchestrator");
    wait_for(Duration::from_secs(20), "the mirror to show the new file's queue", || {
        (mirror.metrics()["queue"]["depth"].as_u64() == Some(queued)).then_some(())
    });
    drop(orchestrator.stdin.take());
    let _ = orchestrator.wait();
    let _ = mirror.terminate(Duration::from_secs(5));
}

/// A `-wal` left with no connection open (here: a reader held it across the
/// writer's close, then closed) is what makes a rename unsafe: the mirror
/// says so in its exposition until a writer has the database open again.
#[test]
fn a_wal_left_behind_is_reported_until_a_writer_opens_the_database() {
    if !can_switch_uids() {
        return;
    }
    let (_dir, path) = database();
    let mut reader = hold(&path);
    step(&format!("write:1:{}", path.display()));
    reader.release();
    let wal = std::fs::metadata(side(&path, "-wal")).map(|m| m.len()).unwrap_or(0);
    assert!(wal > 0, "the held reader kept the -wal ({wal} bytes)");
    let mut mirror = mirror(&path, "1000");
    let gauge = |mirror: &support::Binary| {
        let (_, _, text) = support::get(&mirror.url("/metrics/prometheus"));
        text.lines().find_map(|l| l.strip_prefix("orchmirror_wal_left_behind ")).map(|v| v.trim().to_owned())
    };
    wait_for(Duration::from_secs(20), "the gauge to say 1", || (gauge(&mirror).as_deref() == Some("1")).then_some(()));
    let mut orchestrator = as_writer(&format!("serve:{}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the orchestrator");
    wait_for(Duration::from_secs(20), "the gauge to say 0", || (gauge(&mirror).as_deref() == Some("0")).then_some(()));
    drop(orchestrator.stdin.take());
    let _ = orchestrator.wait();
    let _ = mirror.terminate(Duration::from_secs(5));
}

/// A plain read-only reader as the writer's uid that holds its connection
/// open until released.
struct Held(Child);

fn hold(path: &Path) -> Held {
    let mut reader = as_writer(&format!("hold:{}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the reader");
    let mut lines = BufReader::new(reader.stdout.take().expect("stdout")).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.contains("helper: holding")), "the reader reads");
    Held(reader)
}

impl Held {
    fn release(&mut self) {
        if let Some(mut stdin) = self.0.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.0.wait();
    }
}

/// The control: a read-only reader that keeps its connection open across
/// the writer's close (what the mirror did before) leaves the old `-wal`,
/// and the renamed file is damaged, so the test above can fail.
#[test]
fn control_a_held_reader_corrupts_a_renamed_file() {
    if !can_switch_uids() {
        return;
    }
    let (_dir, path) = database();
    let mut reader = hold(&path);
    session(&path, 1, 0);
    let report = replace(&path, How::Vacuum, Path::new("unused"));
    reader.release();
    assert!(!report.contains("integrity ok;"), "a held reader damages the renamed file: {report}");
}

/// The helper bin (`tests/helpers/replace.rs`) does its steps, run directly
/// on a database of its own.
#[test]
fn the_replace_helper_does_its_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("self.sqlite");
    let new = dir.path().join("new.sqlite");
    rusqlite::Connection::open(&db).and_then(|c| c.execute_batch(orchmirror::SCHEMA_SQL)).expect("schema");
    let run = |what: String| {
        let out = Command::new(HELPER_BIN).env(HELPER_ENV, what).output().expect("run");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(format!("write:3:{}", db.display())).contains("helper: wrote"));
    assert!(run(format!("vacuum:{}:{}", db.display(), new.display())).contains("helper: made"));
    assert!(run(format!("check:{}", new.display())).contains("integrity ok; queued 300"));
}
