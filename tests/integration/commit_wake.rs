//! Commit to visible (README, "Commit to visible"): a commit wakes the sections at
//! once, not at their next tick; under sustained writes refreshes coalesce
//! to one per `ORCH_COALESCE_MS`; where no watch can be had the sections
//! keep their timers and `/health` says why. Real binary, real files, real
//! writers; the periods are a minute, so only a wake-up explains an update
//! within seconds.

use crate::support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::sse::Stream;
use support::{Binary, Fixture, Serves, wait_for};

/// Far longer than any wait below: an update within seconds is a wake-up.
const PERIOD_MS: &str = "60000";
const SOON: Duration = Duration::from_secs(5);

/// The queue depth a stream event carries, if it is one about the queue.
fn queue_depth(ev: &support::sse::Event) -> Option<u64> {
    let body = ev.json();
    match ev.event.as_str() {
        "envelope" => body["queue"]["depth"].as_u64(),
        "section" if body["section"] == "queue" => body["data"]["depth"].as_u64(),
        _ => None,
    }
}

fn wake_modes(bin: &Binary) -> serde_json::Value {
    support::get_json(&bin.url("/health"))["wake"].clone()
}

#[test]
fn a_commit_is_on_the_stream_and_metrics_at_once_in_wal_and_rollback_modes() {
    for mode in ["WAL", "DELETE"] {
        let fx = Fixture::one_of_each();
        fx.conn().pragma_update(None, "journal_mode", mode).expect("journal mode");
        let bin = fx.serve(&[("ORCH_REFRESH_MS", PERIOD_MS)]);
        bin.wait_all_ok();
        let wake = wake_modes(&bin);
        for s in support::SECTIONS {
            assert_eq!(wake[s]["mode"], "commit", "{mode}: {wake}");
            assert_eq!(wake[s]["reason"], serde_json::Value::Null, "{mode}: {wake}");
        }
        let (_, _, text) = support::get(&bin.url("/metrics/prometheus"));
        for s in support::SECTIONS {
            let series = format!("orchmirror_wake_on_commit{{section=\"{s}\"}} 1");
            assert!(text.lines().any(|l| l == series), "{mode}: {series} in the exposition");
        }
        let mut stream = Stream::open(bin.port, None);
        let first = stream.next(SOON).expect("the envelope");
        let mut depth = queue_depth(&first).expect("the envelope's queue");
        let writer = fx.conn();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(150));
            writer.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("commit");
            let committed = Instant::now();
            depth += 1;
            loop {
                let ev = stream.next(SOON).unwrap_or_else(|| panic!("{mode}: no event within {SOON:?} of a commit"));
                if queue_depth(&ev) == Some(depth) {
                    break;
                }
            }
            assert!(committed.elapsed() < SOON, "{mode}: the commit arrived, well before the {PERIOD_MS} ms period");
            assert_eq!(bin.metrics()["queue"]["depth"].as_u64(), Some(depth), "{mode}: /metrics has it too");
        }
    }
}

#[test]
fn sustained_commits_coalesce_to_one_refresh_per_gap_and_end_exact() {
    let fx = Fixture::one_of_each();
    fx.conn().pragma_update(None, "journal_mode", "WAL").expect("wal");
    let bin = fx.serve(&[("ORCH_REFRESH_MS", PERIOD_MS), ("ORCH_COALESCE_MS", "400")]);
    bin.wait_all_ok();
    let mut stream = Stream::open(bin.port, None);
    stream.next(SOON).expect("the envelope");

    // About 300 commits in 2 s: without coalescing, as many queue refreshes.
    let writer = fx.conn();
    let start = Instant::now();
    let mut commits = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        writer.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("commit");
        commits += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let events: Vec<u64> = stream.collect(Duration::from_millis(1500)).iter().filter_map(queue_depth).collect();
    let elapsed_ms = start.elapsed().as_millis() as u64;
    assert!(commits > 100, "the writer committed {commits} times");
    // One refresh per 400 ms gap at most (plus the one a first commit starts at once).
    assert!(
        (2..=elapsed_ms / 400 + 2).contains(&(events.len() as u64)),
        "{} queue events for {commits} commits in {elapsed_ms} ms: {events:?}",
        events.len()
    );
    assert_eq!(events.last().copied(), Some(commits), "the last event has every commit");
    assert_eq!(bin.metrics()["queue"]["depth"].as_u64(), Some(commits));
}

/// The uid the fallback test exhausts inotify instances for (no other test uses it).
const NO_WATCH_UID: &str = "4105";

#[test]
fn without_a_watch_the_sections_keep_their_timers_and_health_says_why() {
    if !support::privileged("a uid whose inotify instances are all taken") {
        return;
    }
    let fx = Fixture::one_of_each();
    std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&fx.path, std::fs::Permissions::from_mode(0o644)).expect("chmod db");
    let as_uid = |program: &Path| {
        let mut c = Command::new("setpriv");
        c.args([&format!("--reuid={NO_WATCH_UID}"), &format!("--regid={NO_WATCH_UID}"), "--clear-groups"]).arg(program);
        c
    };
    // Another process of that uid takes every inotify instance the uid may have.
    let mut hog = as_uid(Path::new(env!("CARGO_BIN_EXE_orchmirror-test-inotify-hog")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the hog");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = hog.stdout.take().expect("stdout");
    // Read to the end, so the hog's last lines never meet a closed pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some((_, n)) = line.split_once("hog: holding ") {
                let _ = tx.send(n.to_owned());
            }
        }
    });
    let held = rx.recv_timeout(Duration::from_secs(20)).expect("the hog took the instances");
    assert!(held.parse::<u32>().is_ok_and(|n| n > 0), "held {held}");

    let port = support::free_port();
    let child = as_uid(Path::new(env!("CARGO_BIN_EXE_orchmirror")))
        .env_clear()
        .env("ORCH_DB_PATH", &fx.path)
        .env("ORCH_BIND", format!("127.0.0.1:{port}"))
        .env("ORCH_REFRESH_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the mirror");
    let bin = Binary { child, base: format!("http://127.0.0.1:{port}"), port };
    wait_for(Duration::from_secs(20), "the mirror to listen", || support::client().get(bin.url("/livez")).send().ok());
    bin.wait_all_ok();
    let wake = wake_modes(&bin);
    for s in support::SECTIONS {
        assert_eq!(wake[s]["mode"], "timer", "{wake}");
        let reason = wake[s]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("inotify instances"), "says which limit: {reason}");
    }
    let (_, _, text) = support::get(&bin.url("/metrics/prometheus"));
    assert!(text.contains("orchmirror_wake_on_commit{section=\"queue\"} 0"), "the gauge says so too");
    // The timer still brings commits in, within a period or so.
    let depth = bin.metrics()["queue"]["depth"].as_u64().unwrap_or_default();
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');");
    wait_for(SOON, "the commit at the next tick", || {
        (bin.metrics()["queue"]["depth"].as_u64() == Some(depth + 1)).then_some(())
    });
    drop(hog.stdin.take());
    let _ = hog.wait();
}

/// `ORCH_DB_PATH` a symbolic link into another directory (issue 33, item 2):
/// SQLite writes the `-wal` beside the file the link names, and commits there
/// wake the sections (they used to show only at the period).
#[test]
fn commits_through_a_symbolic_link_wake_the_sections() {
    let fx = Fixture::one_of_each();
    fx.conn().pragma_update(None, "journal_mode", "WAL").expect("wal");
    let links = tempfile::tempdir().expect("tempdir");
    let link = links.path().join("orch-link.db");
    std::os::unix::fs::symlink(&fx.path, &link).expect("symlink");
    let bin = Binary::start(&[("ORCH_DB_PATH", &link.display().to_string()), ("ORCH_REFRESH_MS", PERIOD_MS)]);
    let depth = bin.wait_all_ok()["queue"]["depth"].as_u64().expect("depth");
    assert_eq!(wake_modes(&bin)["queue"]["mode"], "commit");
    let writer = fx.conn();
    writer.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("commit");
    wait_for(SOON, "the commit through the link", || {
        (bin.metrics()["queue"]["depth"].as_u64() == Some(depth + 1)).then_some(())
    });
}

/// The database's directory deleted and made again while the mirror runs
/// (issue 33, item 2): `/health` says `timer` and why while nothing is
/// watched, then `commit` again, and commits in the new directory wake the
/// sections (they used to show only at the period while `/health` said `commit`).
#[test]
fn a_replaced_directory_is_watched_again_and_health_says_so_meanwhile() {
    let top = tempfile::tempdir().expect("tempdir");
    let dir = top.path().join("data");
    let db = dir.join("orch.db");
    let make = || {
        std::fs::create_dir_all(&dir).expect("mkdir");
        let c = rusqlite::Connection::open(&db).expect("open");
        c.execute_batch(orchmirror::SCHEMA_SQL).expect("schema");
        c.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("row");
        c
    };
    drop(make());
    let bin = Binary::start(&[("ORCH_DB_PATH", &db.display().to_string()), ("ORCH_REFRESH_MS", PERIOD_MS)]);
    bin.wait_all_ok();
    assert_eq!(wake_modes(&bin)["queue"]["mode"], "commit");
    std::fs::remove_dir_all(&dir).expect("remove the directory");
    let wake = wait_for(SOON, "/health to say timer", || {
        let w = wake_modes(&bin);
        (w["queue"]["mode"] == "timer").then_some(w)
    });
    let reason = wake["queue"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("removed or replaced"), "{reason}");
    let writer = make();
    wait_for(SOON, "/health to say commit again", || (wake_modes(&bin)["queue"]["mode"] == "commit").then_some(()));
    wait_for(SOON, "the new file", || (bin.metrics()["queue"]["depth"].as_u64() == Some(1)).then_some(()));
    writer.execute_batch("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("commit");
    wait_for(SOON, "the commit in the new directory", || {
        (bin.metrics()["queue"]["depth"].as_u64() == Some(2)).then_some(())
    });
}
