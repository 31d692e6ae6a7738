//! A helper process of `tests/integration/replace.rs`, run as the
//! orchestrator's uid (a bin, built for the tests only: `test-util`).
//!
//! The steps, chosen by
//! `ORCHMIRROR_TEST_REPLACE`: `write:ROUND:DB` (delete some jobs and add
//! rows of many sizes in one transaction, then close), `session:ROUND:LINGER_MS:DB`
//! (that, then small commits for 200 ms, then close LINGER_MS later), `serve:DB` (a commit
//! every 50 ms until stdin ends), `checkpoint:DB` (`PRAGMA
//! wal_checkpoint(TRUNCATE)`), `vacuum:DB:NEW`
//! (`VACUUM INTO`, then WAL mode on the new file), `backup:DB:NEW` (the
//! backup API, then WAL mode), `check:DB` (`PRAGMA integrity_check` and the
//! queued jobs), `hold:DB` (a read-only reader that holds its connection
//! until a line on stdin). Each prints one `helper:` line.

use std::time::Duration;

const HELPER_ENV: &str = "ORCHMIRROR_TEST_REPLACE";

fn main() {
    let Some(arg) = std::env::var_os(HELPER_ENV) else {
        eprintln!("{HELPER_ENV} names the step (see the file's documentation)");
        std::process::exit(2);
    };
    let arg = arg.to_string_lossy().into_owned();
    let (what, rest) = arg.split_once(':').expect("WHAT:ARGS");
    match what {
        "write" => {
            let (round, db) = rest.split_once(':').expect("ROUND:DB");
            write(db, round.parse().expect("round"));
            println!("helper: wrote");
        }
        "session" => {
            // The orchestrator for a while: the round's rows, small commits, then close.
            let (round, rest) = rest.split_once(':').expect("ROUND:LINGER_MS:DB");
            let (linger, db) = rest.split_once(':').expect("LINGER_MS:DB");
            write(db, round.parse().expect("round"));
            let c = rusqlite::Connection::open(db).expect("open");
            c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
            for i in 0..20 {
                c.execute("UPDATE jobs SET attempts = ?1 WHERE id = (SELECT max(id) FROM jobs)", [i]).expect("update");
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(linger.parse().expect("linger")));
            drop(c);
            println!("helper: session done");
        }
        "serve" => {
            // The orchestrator until stdin ends: a commit every 50 ms.
            let c = rusqlite::Connection::open(rest).expect("open");
            c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                let _ = std::io::stdin().read_line(&mut String::new());
                let _ = tx.send(());
            });
            while rx.recv_timeout(Duration::from_millis(50)).is_err() {
                c.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = (SELECT max(id) FROM jobs)", [])
                    .expect("update");
            }
            println!("helper: served");
        }
        "checkpoint" => {
            let c = rusqlite::Connection::open(rest).expect("open");
            c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
            let r: (i64, i64, i64) = c
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("checkpoint");
            println!("helper: checkpointed {r:?}");
        }
        "vacuum" | "backup" => {
            let (db, new) = rest.split_once(':').expect("DB:NEW");
            let _ = std::fs::remove_file(new);
            let c = rusqlite::Connection::open(db).expect("open");
            c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
            if what == "vacuum" {
                c.execute("VACUUM INTO ?1", [new]).expect("vacuum into");
            } else {
                let mut dst = rusqlite::Connection::open(new).expect("open the new file");
                rusqlite::backup::Backup::new(&c, &mut dst)
                    .and_then(|b| b.run_to_completion(1000, Duration::ZERO, None))
                    .expect("backup");
            }
            drop(c);
            let n = rusqlite::Connection::open(new).expect("open the new file");
            n.pragma_update(None, "journal_mode", "WAL").expect("wal");
            drop(n);
            println!("helper: made {new}");
        }
        "check" => {
            let c = rusqlite::Connection::open(rest).expect("open");
            c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
            let integrity: Result<Vec<String>, _> = c
                .prepare("PRAGMA integrity_check")
                .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect());
            let queued: Result<i64, _> =
                c.query_row("SELECT count(*) FROM jobs WHERE status = 'queued'", [], |r| r.get(0));
            match (integrity, queued) {
                (Ok(lines), Ok(q)) if lines == ["ok"] => println!("helper: integrity ok; queued {q}"),
                (integrity, queued) => println!("helper: integrity {integrity:?}; queued {queued:?}"),
            }
        }
        "hold" => {
            let c = rusqlite::Connection::open_with_flags(rest, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open read-only");
            let n: i64 = c.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)).expect("read");
            println!("helper: holding ({n} jobs)");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(c);
        }
        other => panic!("unknown helper step {other}"),
    }
}

/// Deletes some jobs and adds 300 rows of many sizes in one transaction, then closes.
fn write(db: &str, round: i64) {
    let mut c = rusqlite::Connection::open(db).expect("open");
    c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    let tx = c.transaction().expect("begin");
    tx.execute("DELETE FROM jobs WHERE id % 7 = ?1", [round % 7]).expect("delete");
    for i in 0..300 {
        let size = usize::try_from((i * 37 + round * 11) % 400 + 1).expect("size");
        tx.execute("INSERT INTO jobs (agent, status, repo) VALUES ('dev', 'queued', ?1)", ["r".repeat(size)])
            .expect("insert");
    }
    tx.commit().expect("commit");
}
