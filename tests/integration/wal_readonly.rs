//! A WAL database whose writer closed last (no -wal/-shm) in a directory the
//! mirror cannot write: a clear error, and reading resumes once a writer has
//! the files open again. Needs root (to run the mirror as `nobody`); root
//! itself can always create the files, so it cannot show the fault.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Serves, wait_for};

struct AsNobody(support::Binary);

impl AsNobody {
    /// The binary as uid/gid 65534, serving `db` with fast refreshes.
    fn serve(db: &std::path::Path) -> AsNobody {
        let port = support::free_port();
        let child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_orchmirror")])
            .env_clear()
            .env("ORCH_DB_PATH", db)
            .env("ORCH_BIND", format!("127.0.0.1:{port}"))
            .env("ORCH_REFRESH_MS", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn as nobody");
        AsNobody(support::Binary { child, base: format!("http://127.0.0.1:{port}"), port })
    }
}

impl Serves for AsNobody {
    fn base(&self) -> &str {
        &self.0.base
    }
}

#[test]
fn wal_without_shm_in_a_read_only_directory_errors_clearly_then_recovers() {
    if !support::privileged("to run the mirror as nobody") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let path = dir.path().join("wal.sqlite");
    {
        let c = rusqlite::Connection::open(&path).expect("create");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.execute_batch(orchmirror::SCHEMA_SQL).expect("schema");
        c.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("row");
    } // the last connection closes: SQLite removes -wal and -shm
    assert!(!dir.path().join("wal.sqlite-shm").exists());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod db");

    let mirror = AsNobody::serve(&path);
    let m = wait_for(Duration::from_secs(15), "an error for the unreadable WAL database", || {
        let m = support::client().get(mirror.url("/metrics")).send().ok()?.json::<serde_json::Value>().ok()?;
        (m["sections"]["queue"]["status"] == "error").then_some(m)
    });
    let err = m["sections"]["queue"]["error"].as_str().unwrap_or_default().to_owned();
    assert!(err.contains("WAL mode") && err.contains("cannot write that directory"), "clear error: {err}");

    // A writer opens the database (creating -wal and -shm): the mirror reads
    // again, and sees the writer's later commits (it may first read the
    // database as it was when the writer opened it).
    let writer = rusqlite::Connection::open(&path).expect("writer");
    writer.query_row("SELECT count(*) FROM jobs", [], |_| Ok(())).expect("the writer's first read");
    wait_for(Duration::from_secs(15), "recovery", || {
        (mirror.metrics()["sections"]["queue"]["status"] == "ok").then_some(())
    });
    writer.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("commit");
    let m = wait_for(Duration::from_secs(15), "the writer's commit", || {
        let m = mirror.metrics();
        (m["queue"]["depth"] == 2).then_some(m)
    });
    assert_eq!(m["sections"]["queue"]["status"], "ok");
    drop(writer);
}

/// The mirror runs as the database's owner, but the directory is not its to
/// write: SQLite could not create the -wal/-shm files, and would only say
/// "attempt to write a readonly database". The error says what is wrong and
/// what to do; reading starts once a writer has the files in place.
#[test]
fn wal_owned_by_the_mirror_in_a_directory_it_cannot_write_says_why_then_recovers() {
    if !support::privileged("to run the mirror as nobody") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let path = dir.path().join("owned.sqlite");
    {
        let c = rusqlite::Connection::open(&path).expect("create");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.execute_batch(orchmirror::SCHEMA_SQL).expect("schema");
        c.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("row");
    }
    assert!(
        Command::new("chown").args(["65534:65534", &path.display().to_string()]).status().is_ok_and(|s| s.success())
    );
    let mirror = AsNobody::serve(&path);
    let m = wait_for(Duration::from_secs(15), "an error for the WAL database", || {
        let m = support::client().get(mirror.url("/metrics")).send().ok()?.json::<serde_json::Value>().ok()?;
        (m["sections"]["queue"]["status"] == "error").then_some(m)
    });
    let err = m["sections"]["queue"]["error"].as_str().unwrap_or_default().to_owned();
    assert!(err.contains("WAL mode") && err.contains("cannot write that directory"), "{err}");
    assert!(!err.contains("attempt to write"), "{err}");
    assert!(!err.contains(&dir.path().display().to_string()), "no absolute path: {err}");

    let writer = rusqlite::Connection::open(&path).expect("writer");
    writer.query_row("SELECT count(*) FROM jobs", [], |_| Ok(())).expect("the writer's first read");
    wait_for(Duration::from_secs(15), "recovery", || {
        (mirror.metrics()["sections"]["queue"]["status"] == "ok").then_some(())
    });
    drop(writer);
}
