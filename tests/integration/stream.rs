//! `GET /metrics/stream` (README, "The stream") against the real binary, read
//! with a real SSE parser (`support::sse`): the first event, change events,
//! no events without change, resumption, a slow reader, the stream cap, the
//! kill switch and SIGTERM.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::sse::{Item, Stream};
use support::{Binary, Fixture, Serves, get_json, wait_for};

/// Generous bound for something that should happen within a refresh period (100 ms).
const SOON: Duration = Duration::from_secs(3);

/// `value` without what moves with the clock: ages, `generated_at`,
/// `refreshed_at` (a refresh that found nothing new still moves it).
fn timeless(mut value: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in
                    ["generated_at", "age_ms", "refreshed_at", "age_in_stage_s", "runtime_s", "oldest_queued_age_s"]
                {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

fn first_envelope(stream: &mut Stream) -> support::sse::Event {
    let first = stream.next(SOON).expect("a first event");
    assert_eq!(first.event, "envelope", "{first:?}");
    assert!(!first.id.is_empty(), "the envelope carries a cursor");
    first
}

/// A fixture, served, with every section ok.
fn served(env: &[(&str, &str)]) -> (Fixture, Binary) {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(env);
    bin.wait_all_ok();
    (fx, bin)
}

#[test]
fn the_first_event_is_the_envelope_then_one_event_per_change_and_none_without() {
    let (fx, bin) = served(&[("ORCH_STREAM_HEARTBEAT_MS", "1000")]);
    // A client that accepts compression still gets events as they are written.
    let mut stream = Stream::open_with(bin.port, None, false, None, &[("Accept-Encoding", "gzip, br, zstd")]);
    assert_eq!(stream.status, 200);
    assert!(stream.header("content-type").is_some_and(|ct| ct.starts_with("text/event-stream")));
    assert_eq!(stream.header("content-encoding"), Some("identity"));
    let first = first_envelope(&mut stream);
    assert_eq!(timeless(first.json()), timeless(bin.metrics()), "the envelope is what /metrics answers");

    // Nothing changes: nothing but heartbeats (which a parser does not surface).
    let quiet = stream.collect(Duration::from_millis(2500));
    assert!(quiet.is_empty(), "events without a change: {quiet:?}");

    // One change to the queue: one `queue` event, nothing for the other sections.
    let changed_at = Instant::now();
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('developer', 'queued');");
    let ev = stream.next(SOON).expect("a section event for the change");
    assert!(changed_at.elapsed() < SOON);
    assert_eq!(ev.event, "section");
    let body = ev.json();
    assert_eq!(body["section"], "queue");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["error"], Value::Null);
    assert!(body["seq"].as_u64().is_some_and(|s| s >= 2), "{body}");
    assert_eq!(body["data"]["counts"]["queued"], 1);
    // Ages are whole seconds from `created_at` (itself whole seconds): the
    // event's and a later request's may straddle a second, so they are compared apart.
    let envelope = bin.metrics()["queue"].clone();
    assert_eq!(timeless(body["data"].clone()), timeless(envelope.clone()), "the section as the envelope has it");
    let (event_age, envelope_age) =
        (body["data"]["oldest_queued_age_s"].as_f64(), envelope["oldest_queued_age_s"].as_f64());
    assert!(
        event_age.zip(envelope_age).is_some_and(|(e, m)| (0.0..=1.0).contains(&(m - e))),
        "ages {event_age:?} then {envelope_age:?}"
    );
    assert_ne!(ev.id, first.id, "the cursor moved");
    let rest = stream.collect(Duration::from_millis(1500));
    assert!(rest.is_empty(), "only the queue changed: {rest:?}");
}

#[test]
fn idle_streams_carry_heartbeat_comments() {
    let (_fx, bin) = served(&[("ORCH_STREAM_HEARTBEAT_MS", "1000")]);
    let mut stream = Stream::open_with(bin.port, None, true, None, &[]);
    let start = Instant::now();
    let mut heartbeats = 0;
    while start.elapsed() < Duration::from_millis(3600) {
        if let Some(Item::Raw(bytes)) = stream.next_item(Duration::from_millis(200)) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            heartbeats += text.lines().filter(|l| l.starts_with(':')).count();
        }
    }
    assert!((2..=5).contains(&heartbeats), "{heartbeats} heartbeat comments in 3.6 s at 1 s");
}

#[test]
fn a_status_change_alone_is_an_event() {
    let (fx, bin) = served(&[]);
    let mut stream = Stream::open(bin.port, None);
    first_envelope(&mut stream);
    fx.exec("DROP TABLE tasks;");
    // The DROP's own write lock may fail a refresh first ("database is
    // locked", also stale): every event is the stages section going stale,
    // and the lasting reason, the missing table, arrives.
    let start = Instant::now();
    loop {
        let ev = stream.next(SOON).expect("an event for the failing section");
        let body = ev.json();
        assert_eq!((body["section"].as_str(), body["status"].as_str()), (Some("stages"), Some("stale")), "{body}");
        assert!(body["data"].is_array(), "stale serves the last good data");
        if body["error"].as_str().is_some_and(|e| e.contains("tasks")) {
            break;
        }
        assert!(start.elapsed() < SOON, "the missing table as the reason: {body}");
    }
    drop(bin);
}

#[test]
fn refreshed_events_when_asked_say_that_quiet_sections_are_fresh() {
    let (_fx, bin) = served(&[("ORCH_REFRESH_MS", "200")]);
    let mut stream = Stream::open_target(bin.port, "/metrics/stream?refreshed=1&other=x", None, false, None, &[]);
    first_envelope(&mut stream);
    // Nothing changes; the sections keep refreshing, and the stream says so
    // about once a second, with ages as fresh as /metrics' own.
    let events = stream.collect(Duration::from_millis(3500));
    assert!((2..=5).contains(&events.len()), "about one refreshed event a second: {events:?}");
    for ev in &events {
        assert_eq!(ev.event, "refreshed", "{ev:?}");
        let body = ev.json();
        let at: Vec<Option<usize>> = support::SECTIONS.iter().map(|s| ev.data.find(&format!("\"{s}\":"))).collect();
        assert!(at.iter().all(Option::is_some) && at.is_sorted(), "every section, in order: {}", ev.data);
        for s in support::SECTIONS {
            let age = body[s]["age_ms"].as_i64().unwrap_or(i64::MAX);
            assert!((0..=1500).contains(&age), "{s}: age_ms {age} on a quiet database refreshing every 200 ms");
            assert!(body[s]["refreshed_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
        }
    }
    let stamps: Vec<String> = events.iter().map(|e| e.json()["queue"]["refreshed_at"].to_string()).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "refreshed_at moves on: {stamps:?}");
}

#[test]
fn last_event_id_resumes_with_exactly_what_changed() {
    let (fx, bin) = served(&[]);
    let mut stream = Stream::open(bin.port, None);
    let cursor = first_envelope(&mut stream).id;
    stream.close();

    // Missed while disconnected: a finished job with its run (queue and
    // cost change; the running agent does not).
    fx.exec(
        "INSERT INTO jobs (agent, status) VALUES ('tester', 'done');
         INSERT INTO agent_runs (job_id, agent, cost_usd) VALUES (2, 'tester', 2.0);",
    );
    wait_for(SOON, "the mirror saw the change", || {
        let m = bin.metrics();
        (m["queue"]["counts"]["done"] == 1 && m["cost"]["aggregate"]["runs"] == 2).then_some(())
    });
    let mut resumed = Stream::open(bin.port, Some(&cursor));
    let events = resumed.collect(Duration::from_millis(1500));
    let sections: Vec<String> = events
        .iter()
        .map(|e| {
            assert_eq!(e.event, "section", "{e:?}");
            e.json()["section"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(sections, ["queue", "cost"], "each changed section once, in envelope order");
    let now = bin.metrics();
    assert_eq!(events[0].json()["data"], now["queue"]);
    assert_eq!(timeless(events[1].json()["data"].clone()), timeless(now["cost"].clone()));

    // Resuming from the last of those: nothing to send.
    let last = events.last().map(|e| e.id.clone()).unwrap_or_default();
    let mut again = Stream::open(bin.port, Some(&last));
    let none = again.collect(Duration::from_millis(1000));
    assert!(none.is_empty(), "nothing changed since that cursor: {none:?}");

    // A cursor it cannot use gets a fresh envelope.
    for bad in ["garbage", "", "0000000000000000.1o.1o.1o.1o", &format!("{cursor}.1o"), &cursor.replace('o', "q")] {
        let mut s = Stream::open(bin.port, Some(bad));
        let ev = s.next(SOON).unwrap_or_else(|| panic!("no event for cursor {bad:?}"));
        assert_eq!(ev.event, "envelope", "cursor {bad:?}");
        assert_eq!(timeless(ev.json()), timeless(bin.metrics()));
    }
}

#[test]
fn a_cursor_from_before_a_restart_gets_an_envelope() {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let mut stream = Stream::open(bin.port, None);
    let cursor = first_envelope(&mut stream).id;
    drop(stream);
    drop(bin);
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let mut stream = Stream::open(bin.port, Some(&cursor));
    let ev = stream.next(SOON).expect("an event");
    assert_eq!(ev.event, "envelope", "the old instance's cursor is not used");
    assert_ne!(ev.id, cursor);
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn a_reader_that_stalls_is_resynchronised_without_holding_memory_or_delaying_others() {
    // Large events: 20,000 active tasks make each stages event about 2 MB.
    let fx = Fixture::new();
    fx.exec(
        "PRAGMA journal_mode = WAL;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO tasks (work_item_id, stage, repo) SELECT 'ORCH-' || i, 'review', 'core' FROM n;",
    );
    let bin = fx.serve(&[("ORCH_STAGES_REFRESH_MS", "50")]);
    bin.wait_all_ok();
    let pid = bin.child.id();

    let mut slow = Stream::open_with(bin.port, None, false, Some(4096), &[]);
    let mut fast = Stream::open(bin.port, None);
    first_envelope(&mut slow);
    first_envelope(&mut fast);
    let baseline = rss(pid);
    slow.pause(true);
    let paused_at = Instant::now();

    // The orchestrator moves a task every 50 ms for 5 s.
    let writer_fx = fx.path.clone();
    let writer = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(writer_fx).expect("open");
        for i in 0..100 {
            conn.execute("UPDATE tasks SET stage = ?1 WHERE id = 1", [format!("stage-{i}")]).expect("update");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let mut peak = baseline;
    let mut last_event = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut fast_events = 0;
    while !writer.is_finished() {
        if let Some(ev) = fast.next(Duration::from_millis(100)) {
            assert_eq!(ev.event, "section", "the fast reader is never resynchronised");
            longest_gap = longest_gap.max(last_event.elapsed());
            last_event = Instant::now();
            fast_events += 1;
        }
        peak = peak.max(rss(pid));
    }
    writer.join().expect("writer");
    let paused_for = paused_at.elapsed();
    assert!(fast_events >= 10, "the fast reader kept receiving: {fast_events} events");
    assert!(longest_gap < Duration::from_secs(2), "the fast reader waited {longest_gap:?} for an event");
    // Unbounded, 100 changes of ~2 MB would hold ~200 MB for the stalled reader.
    let growth = peak.saturating_sub(baseline);
    assert!(growth < 100 * 1024 * 1024, "memory grew by {} MB while a reader stalled", growth / (1024 * 1024));

    // The stalled reader reads again: what it gets ends in `resync`, then a
    // fresh envelope; applying what follows gives the current state.
    std::thread::sleep(Duration::from_millis(500));
    slow.pause(false);
    let mut saw_resync = false;
    let mut before_resync = 0;
    let mut state: Option<Value> = None;
    while let Some(ev) = slow.next(Duration::from_millis(1500)) {
        match ev.event.as_str() {
            "resync" => {
                saw_resync = true;
                assert!(ev.json()["dropped"].as_u64().is_some_and(|n| n > 0), "{}", ev.data);
            }
            "envelope" => {
                assert!(saw_resync, "an envelope after the first comes only after a resync");
                state = Some(ev.json());
            }
            "section" if !saw_resync => before_resync += 1,
            "section" => {
                if let Some(s) = state.as_mut() {
                    let body = ev.json();
                    let name = body["section"].as_str().unwrap_or_default().to_owned();
                    s[&name] = body["data"].clone();
                }
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(saw_resync, "the stalled reader was told it missed events");
    assert!(
        before_resync < fast_events,
        "the stalled reader was sent {before_resync} of {fast_events} changes before its resync: they were held, not dropped"
    );
    assert!(
        paused_for < Duration::from_secs(25),
        "paused {paused_for:?}: the write timeout (30 s) would have ended it"
    );
    let state = state.expect("a fresh envelope after the resync");
    assert_eq!(timeless(state["stages"].clone()), timeless(bin.metrics()["stages"].clone()), "the envelope is current");
    let health = get_json(&bin.url("/health"));
    assert!(health["streams"]["resyncs"].as_u64().is_some_and(|n| n >= 1), "{health}");
    let (_, _, exposition) = support::get(&bin.url("/metrics/prometheus"));
    assert!(
        exposition.lines().any(|l| l.starts_with("orchmirror_stream_resyncs_total ") && !l.ends_with(" 0")),
        "{exposition}"
    );
}

#[test]
fn past_orch_max_streams_a_client_gets_503_until_a_slot_frees() {
    let (_fx, bin) = served(&[("ORCH_MAX_STREAMS", "2")]);
    let mut a = Stream::open(bin.port, None);
    let mut b = Stream::open(bin.port, None);
    first_envelope(&mut a);
    first_envelope(&mut b);
    let refused = Stream::open(bin.port, None);
    assert_eq!(refused.status, 503);
    assert!(refused.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()), "{:?}", refused.headers);
    let body: Value = serde_json::from_str(&refused.body).expect("a JSON error");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("ORCH_MAX_STREAMS")), "{body}");
    assert_eq!(get_json(&bin.url("/health"))["streams"]["open"], 2);
    let (_, _, exposition) = support::get(&bin.url("/metrics/prometheus"));
    let sample =
        |name: &str| exposition.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok());
    assert_eq!(sample("orchmirror_streams"), Some(2.0), "{exposition}");
    assert!(sample("orchmirror_stream_events_total").is_some_and(|n| n >= 2.0), "{exposition}");

    a.close();
    let mut c = wait_for(SOON, "a freed slot", || {
        let s = Stream::open(bin.port, None);
        (s.status == 200).then_some(s)
    });
    first_envelope(&mut c);
    assert_eq!(get_json(&bin.url("/health"))["streams"]["open"], 2);
    drop(b);
    drop(c);
    wait_for(SOON, "no open streams", || (get_json(&bin.url("/health"))["streams"]["open"] == 0).then_some(()));

    let (_fx, none) = served(&[("ORCH_MAX_STREAMS", "0")]);
    assert_eq!(Stream::open(none.port, None).status, 503, "ORCH_MAX_STREAMS=0 serves no stream");
}

#[test]
fn with_the_kill_switch_off_the_stream_says_so_and_ends() {
    let bin = Binary::start(&[("ORCH_METRICS_ENABLED", "false")]);
    let mut stream = Stream::open(bin.port, None);
    assert_eq!(stream.status, 200);
    let ev = stream.next(SOON).expect("one event");
    assert_eq!(ev.event, "envelope");
    assert_eq!(ev.data, r#"{"schema_version":1,"enabled":false}"#);
    assert!(stream.next(SOON).is_none() && stream.ended, "the stream ends");
}

#[test]
fn sigterm_ends_open_streams_and_exits_zero_within_two_seconds() {
    let (_fx, mut bin) = served(&[]);
    let mut streams: Vec<Stream> = (0..5).map(|_| Stream::open(bin.port, None)).collect();
    for s in &mut streams {
        first_envelope(s);
    }
    let status = bin.terminate(Duration::from_secs(2)).expect("exited within 2 s of SIGTERM");
    assert!(status.success(), "{status}");
    for mut s in streams {
        assert!(s.next(SOON).is_none() && s.ended, "the stream ended");
    }
}

/// A host that stops its mirror in-process (`MirrorHandle::stop`) ends the
/// routes' open streams, and a new stream is refused with `503`.
#[test]
fn stopping_the_mirror_in_process_ends_its_streams() {
    let fx = Fixture::new();
    let mirror = support::InProcess::start(support::fast_settings(&fx.path));
    let port: u16 = mirror.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let mut streams: Vec<Stream> = (0..3).map(|_| Stream::open(port, None)).collect();
    for s in &mut streams {
        first_envelope(s);
    }
    mirror.handle.stop();
    for mut s in streams {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.ended && Instant::now() < deadline {
            s.next_item(Duration::from_millis(200));
        }
        assert!(s.ended, "the stream ended when the mirror stopped");
    }
    let refused = Stream::open(port, None);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("stopping"), "{}", refused.body);
}

/// The README's Python client (`examples/stream_client.py`, standard library
/// only) against the real binary: it prints the envelope, then a change,
/// and after a restart resumes with its cursor and gets a fresh envelope.
#[test]
fn the_readme_python_client_follows_the_stream_and_resumes() {
    let Some(python) = support::system_tool("python3") else { return };
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let bin_port = bin.port;
    let bind = format!("127.0.0.1:{bin_port}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stream_client.py");
    let mut child = std::process::Command::new(python)
        .arg(&script)
        .env("ORCHMIRROR_STREAM_URL", format!("http://{bind}/metrics/stream"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run the client");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let expect = |prefix: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(_) => panic!("the client printed no line starting {prefix:?}"),
            }
        }
    };
    expect("envelope");
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('developer', 'queued');");
    expect("section queue");
    drop(bin);
    expect("stream lost");
    let _again = Binary::start_at(bin_port, &[("ORCH_DB_PATH", &fx.path.display().to_string())]);
    expect("envelope");
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 24, item 5: `ORCH_MAX_STREAMS` above what the connection cap leaves
/// is lowered at start-up (with a warning) so that streams never take the
/// connections `/metrics`, `/health` and the probes need. Under 300 open files
/// the mirror has (300 − 128) connections; a quarter of them stays free.
#[test]
fn streams_cannot_take_the_connections_the_probes_need() {
    use std::io::{BufRead, BufReader, Write};
    let fx = Fixture::one_of_each();
    let port = support::free_port();
    let cmd = Binary::command(&[
        ("ORCH_DB_PATH", &fx.path.display().to_string()),
        ("ORCH_BIND", &format!("127.0.0.1:{port}")),
        ("ORCH_MAX_STREAMS", "1000"),
    ]);
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c").arg("ulimit -n 300 && exec \"$0\"").arg(cmd.get_program());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let child = sh.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let mut bin = Binary { child, base: format!("http://127.0.0.1:{port}"), port };
    support::wait_for(SOON, "the mirror to listen", || support::client().get(bin.url("/livez")).send().ok());
    bin.wait_all_ok();
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let connections = orchmirror::test_util::connections_per_worker(300, workers) * workers;
    let expected = orchmirror::test_util::streams_within(connections);
    assert!(expected > 0 && expected < 1000, "{expected}");

    let open_one = || -> (u16, Option<std::net::TcpStream>) {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, None) };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.write_all(b"GET /metrics/stream HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let mut line = String::new();
        let _ = BufReader::new(&s).read_line(&mut line);
        (line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), Some(s))
    };
    let mut open = Vec::new();
    let refused = loop {
        match open_one() {
            (200, s) => open.push(s),
            (other, _) => break other,
        }
        assert!(open.len() <= expected, "more streams than the cap leaves: {}", open.len());
    };
    let opened = open.len();
    assert_eq!((opened, refused), (expected, 503), "streams up to the lowered cap, then 503");
    // With every stream slot taken, the other routes still answer at once.
    for path in ["/livez", "/health", "/metrics"] {
        let (status, _, _) = support::get(&bin.url(path));
        assert_eq!(status, 200, "{path} with {opened} streams open");
    }
    drop(open);
    let _ = bin.terminate(Duration::from_secs(10));
    let log = bin.stderr();
    assert!(
        log.contains("ORCH_MAX_STREAMS is above what the connection cap leaves")
            && log.contains(&format!("effective={expected}")),
        "a warning at start-up:\n{log}"
    );
}

/// Runs the binary under `ulimit -n {limit}` (soft and hard) with `env`.
fn start_with_open_files(limit: u64, env: &[(&str, &str)]) -> Binary {
    let port = support::free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut all = vec![("ORCH_BIND", bind.as_str())];
    all.extend_from_slice(env);
    let cmd = Binary::command(&all);
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\"")).arg(cmd.get_program());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let child = sh.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let bin = Binary { child, base: format!("http://{bind}"), port };
    support::wait_for(SOON, "the mirror to listen", || support::client().get(bin.url("/livez")).send().ok());
    bin
}

/// Issue 23: without `ORCH_MAX_STREAMS`, the stream cap is what the
/// open-files limit leaves once a quarter of the connections (at least 16)
/// is kept for the other routes; `/health` and the start-up log give it, and
/// an explicit value wins.
#[test]
fn the_stream_cap_defaults_to_what_the_open_files_limit_leaves() {
    let fx = Fixture::one_of_each();
    let db = fx.path.display().to_string();
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    for limit in [1_000u64, 4_000] {
        let mut bin = start_with_open_files(limit, &[("ORCH_DB_PATH", &db)]);
        let expected = orchmirror::test_util::streams_within(
            orchmirror::test_util::connections_per_worker(limit, workers) * workers,
        );
        let health = get_json(&bin.url("/health"));
        assert_eq!(health["streams"]["max"], expected as u64, "{limit} open files: {health}");
        let _ = bin.terminate(Duration::from_secs(10));
        let log = bin.stderr();
        assert!(
            log.contains(&format!("max_streams={expected}"))
                && log.contains("max_streams_from=\"the open-files limit\""),
            "the start-up log gives the cap and where it came from:\n{log}"
        );
    }
    let mut bin = start_with_open_files(1_000, &[("ORCH_DB_PATH", &db), ("ORCH_MAX_STREAMS", "7")]);
    assert_eq!(get_json(&bin.url("/health"))["streams"]["max"], 7);
    let _ = bin.terminate(Duration::from_secs(10));
    assert!(bin.stderr().contains("max_streams_from=\"ORCH_MAX_STREAMS\""));
}

/// Issue 23: 2,000 streams through the binary at its default cap: every one
/// gets the envelope, stays open across heartbeats while idle, and gets the
/// change a commit makes.
#[test]
fn two_thousand_streams_each_get_the_envelope_heartbeats_and_a_change() {
    use std::io::{Read, Write};
    const STREAMS: usize = 2_000;
    let soft = rlimit::increase_nofile_limit(8_192).unwrap_or(0);
    assert!(soft >= 2 * STREAMS as u64 + 200, "this test needs 4,200 open files; the limit is {soft}");
    let fx = Fixture::one_of_each();
    let bin = start_with_open_files(
        soft.min(20_000),
        &[("ORCH_DB_PATH", &fx.path.display().to_string()), ("ORCH_STREAM_HEARTBEAT_MS", "1000")],
    );
    bin.wait_all_ok();
    let mut streams: Vec<(std::net::TcpStream, Vec<u8>)> = (0..STREAMS)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", bin.port)).expect("connect");
            s.write_all(b"GET /metrics/stream HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
            s.set_nonblocking(true).expect("non-blocking");
            (s, Vec::new())
        })
        .collect();
    // Reads what each stream has until `done` holds for every one, or `within` passes.
    let mut read_until = |within: Duration, what: &str, done: &dyn Fn(&[u8]) -> bool| {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 65536];
        loop {
            let mut all = true;
            for (s, seen) in streams.iter_mut() {
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => panic!("a stream ended while {what}"),
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("a stream failed while {what}: {e}"),
                    }
                }
                all &= done(seen);
            }
            if all {
                return;
            }
            let behind = streams.iter().filter(|(_, seen)| !done(seen)).count();
            assert!(Instant::now() < deadline, "{behind} of {STREAMS} streams still waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let count = |seen: &[u8], needle: &[u8]| seen.windows(needle.len()).filter(|w| *w == needle).count();
    read_until(Duration::from_secs(60), "the envelope", &|seen| {
        seen.starts_with(b"HTTP/1.1 200") && count(seen, b"event: envelope\n") == 1
    });
    // Idle: at least two heartbeats each, and every stream still open.
    read_until(Duration::from_secs(30), "two heartbeats", &|seen| count(seen, b": heartbeat\n\n") >= 2);
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('developer', 'queued');");
    read_until(Duration::from_secs(60), "the queue's change", &|seen| {
        count(seen, b"event: section\n") >= 1 && count(seen, b"\"section\":\"queue\"") >= 1
    });
    let health = get_json(&bin.url("/health"));
    assert_eq!(health["streams"]["open"], STREAMS as u64, "{health}");
}

/// Issue 24: SIGTERM with 50 stream readers that stopped reading a large
/// envelope (10,000 running agents, about 3 MB) ends in milliseconds, not
/// after the 2 s graceful timeout: in-flight answers finish, then every
/// connection closes.
#[test]
fn sigterm_with_stalled_stream_readers_exits_at_once() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("big.db");
    let out = Binary::command(&[])
        .arg("generate")
        .arg(&db)
        .args(["--jobs", "20000", "--running", "10000"])
        .output()
        .expect("generate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut bin = Binary::start(&[("ORCH_DB_PATH", &db.display().to_string())]);
    bin.wait_all_ok();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", bin.port).parse().expect("addr");
    let stalled: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
            s.set_recv_buffer_size(4096).expect("a small receive buffer");
            s.connect(&addr.into()).expect("connect");
            let mut s: std::net::TcpStream = s.into();
            s.write_all(b"GET /metrics/stream HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
            s // never read
        })
        .collect();
    // Every stream has its envelope queued and the server blocked on writing it.
    support::wait_for(SOON, "50 open streams", || {
        (get_json(&bin.url("/health"))["streams"]["open"] == 50).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    // A /metrics answer in flight when SIGTERM comes (its reader, behind a
    // 4 KiB receive window, pauses 300 ms after the first bytes) is finished whole.
    let (started, metrics) = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        s.set_recv_buffer_size(4096).expect("a small receive buffer");
        s.connect(&addr.into()).expect("connect");
        let mut s: std::net::TcpStream = s.into();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let mut got = Vec::new();
            if let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(());
            std::thread::sleep(Duration::from_millis(300));
            loop {
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        (rx, reader)
    };
    started.recv_timeout(SOON).expect("the /metrics answer started");
    let asked = Instant::now();
    let status = bin.terminate(Duration::from_secs(10)).expect("exited");
    let took = asked.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_millis(1500), "SIGTERM took {took:?} with 50 stalled readers");
    let answer = metrics.join().expect("the /metrics reader");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length");
    assert!(length > 2_000_000, "a large envelope: {length} bytes");
    assert_eq!(answer.len() - split, length, "the in-flight answer arrived whole");
    let envelope: Value = serde_json::from_slice(&answer[split..]).expect("JSON");
    assert_eq!(envelope["agents"].as_array().map(Vec::len), Some(10_000));
    drop(stalled);
}

/// Issue 35: a section whose data did not change is not sent again. With
/// one running agent whose CPU ticks move and nothing written, the agents
/// section changes at every sample; `cost` (served with the agents, its
/// running rows paired with theirs, but carrying no ticks) is not resent.
#[test]
fn cost_is_not_resent_when_only_the_agents_ticks_move() {
    let mut busy = std::process::Command::new("sh")
        .arg("-c")
        .arg("while :; do :; done")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn a busy child");
    let now = support::sqlite_ts(chrono::Utc::now());
    let fx = Fixture::new();
    fx.exec(&format!(
        "INSERT INTO jobs (id, agent, status, started_at) VALUES (1, 'developer', 'running', '{now}');
         INSERT INTO agent_runs (id, job_id, agent, pid, started_at) VALUES (1, 1, 'developer', {pid}, '{now}');",
        pid = busy.id()
    ));
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "200")]);
    bin.wait_all_ok();
    let mut stream = Stream::open(bin.port, None);
    first_envelope(&mut stream);
    let events = stream.collect(Duration::from_secs(4));
    let _ = busy.kill();
    let _ = busy.wait();
    let of = |name: &str| events.iter().filter(|e| e.event == "section" && e.json()["section"] == name).count();
    assert!(of("agents") >= 3, "the ticks move, so the agents section changes: {} events", of("agents"));
    assert_eq!(of("cost"), 0, "cost's data did not change: {events:?}");
    // And every agents event carries data that differs from the one before.
    let data: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "section" && e.json()["section"] == "agents")
        .map(|e| e.json()["data"].clone())
        .collect();
    assert!(data.windows(2).all(|w| w[0] != w[1]), "no agents event repeats the one before");
}
