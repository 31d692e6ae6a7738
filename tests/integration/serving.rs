//! The serving path's exactness rules (the issue "`/metrics` at the speed of a
//! fixed body"): requests read each section's replica while its actor beats,
//! and what they get is what asking the actor would give: a refresh is
//! visible to the next request after it, and `age_ms` is exact to the
//! millisecond. (A stalled actor shows `timeout` and a dead one `unavailable`:
//! `faults.rs`.)

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use orchmirror::section::Queue;
use orchmirror::{MirrorHandle, SectionName, Update};
use support::{Binary, Fixture, Serves, fast_settings, wait_until};

/// Forwards every update to a shared list.
struct Collector(Arc<Mutex<Vec<Update>>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Update> for Collector {
    type Result = ();
    fn handle(&mut self, u: Update, _: &mut Self::Context) {
        self.0.lock().expect("log").push(u);
    }
}

#[test]
fn a_refresh_is_visible_to_the_next_request_and_ages_are_exact() {
    let fx = Fixture::one_of_each();
    let mut settings = fast_settings(&fx.path);
    settings.refresh = orchmirror::RefreshPeriods::uniform(Duration::from_millis(30));
    let writer = fx.conn();
    System::new().block_on(async move {
        let handle = MirrorHandle::start(&settings).expect("start");
        let log = Arc::new(Mutex::new(Vec::new()));
        handle.subscribe(SectionName::QUEUE, Collector(Arc::clone(&log)).start().recipient());
        wait_until("all ok", Duration::from_secs(10), async || {
            handle.snapshot().await.is_some_and(|e| e.sections.iter().all(|(_, s)| s.status == orchmirror::Status::Ok))
        })
        .await;
        // Keep requests coming so the replicas are in use (the actors beat).
        for _ in 0..5 {
            let _ = handle.snapshot().await;
        }
        for n in 1..=20u64 {
            writer.execute("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued')", []).expect("insert");
            let seen = log.lock().expect("log").len();
            // Between the write and its update, keep asking (as clients do).
            wait_until("the update", Duration::from_secs(10), async || {
                let _ = handle.snapshot().await;
                log.lock().expect("log").len() > seen
            })
            .await;
            let update = log.lock().expect("log").last().cloned().expect("an update");
            let depth = update.data.get::<Queue>().map(|q| q.depth);
            // The very next request after the update reflects it.
            let envelope = handle.snapshot().await.expect("enabled");
            assert_eq!(envelope.queue().map(|q| q.depth), depth, "write {n}: the next request lags its refresh");
            assert_eq!(depth, Some(n), "write {n}");
            for (name, state) in envelope.sections.iter() {
                let (Some(at), Some(age)) = (state.refreshed_at, state.age_ms) else { panic!("{name}: no age") };
                // age_ms is measured against the precise clock reading generated_at was cut from.
                let upper = (chrono::Utc::now() - at).num_milliseconds();
                assert!(age >= 0 && age <= upper, "{name}: age_ms {age} against at most {upper}");
            }
        }
        handle.stop();
    });
}

/// Requests in one millisecond share one body; every body served is still
/// exactly the envelope of its moment: each section's `refreshed_at` plus
/// its `age_ms` is one and the same clock reading, taken during the request.
#[test]
fn bodies_shared_within_a_millisecond_are_exact_for_their_moment() {
    let fx = Fixture::one_of_each();
    let settings = fast_settings(&fx.path);
    let writer = fx.conn();
    System::new().block_on(async move {
        let handle = MirrorHandle::start(&settings).expect("start");
        wait_until("all ok", Duration::from_secs(10), async || {
            handle.snapshot().await.is_some_and(|e| e.sections.iter().all(|(_, s)| s.status == orchmirror::Status::Ok))
        })
        .await;
        let (mut shared, mut last) = (0, Vec::new());
        for i in 0..3000 {
            if i % 500 == 0 {
                writer.execute("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued')", []).expect("insert");
            }
            let before = chrono::Utc::now().timestamp_millis();
            let parts = handle.envelope_json().await.expect("enabled").expect("json");
            let after = chrono::Utc::now().timestamp_millis();
            let body: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            if body == last {
                shared += 1;
            }
            let m: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            let mut clocks = Vec::new();
            for (name, s) in m["sections"].as_object().expect("sections") {
                let at = chrono::DateTime::parse_from_rfc3339(s["refreshed_at"].as_str().expect("refreshed_at"))
                    .expect("timestamp")
                    .timestamp_millis();
                let age = s["age_ms"].as_i64().unwrap_or_else(|| panic!("{name}: age_ms"));
                clocks.push(at + age);
            }
            assert!(clocks.windows(2).all(|w| w[0] == w[1]), "one clock reading per body: {clocks:?}");
            assert!(
                (before..=after).contains(&clocks[0]),
                "the body's moment {} is not in [{before}, {after}]",
                clocks[0]
            );
            let generated = chrono::DateTime::parse_from_rfc3339(m["generated_at"].as_str().expect("generated_at"))
                .expect("generated_at")
                .timestamp();
            assert_eq!(generated, clocks[0].div_euclid(1000), "generated_at is that reading's second");
            last = body;
        }
        assert!(shared > 0, "no two requests shared a body");
        handle.stop();
    });
}

fn shared_compressions(bin: &Binary, encoding: &str) -> f64 {
    let (_, _, text) = support::get(&bin.url("/metrics/prometheus"));
    let series = format!("orchmirror_shared_compressions_total{{encoding=\"{encoding}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse().ok()).unwrap_or(-1.0)
}

/// Issue 24, item 3: a large `/metrics` body is compressed once per change,
/// second and encoding, and shared by the requests that ask meanwhile (it
/// was compressed per request, ~10 MB of memory each for `br` on a 3.3 MB
/// envelope). Every answer still decompresses to the envelope.
#[test]
fn large_compressed_bodies_are_made_once_and_shared() {
    use std::io::Read;
    let fx = Fixture::new();
    let rows: String = (1..=1500)
        .map(|i| {
            format!(
                "INSERT INTO jobs (id, agent, status, started_at) VALUES ({i}, 'developer', 'running', datetime('now'));
                 INSERT INTO agent_runs (job_id, agent) VALUES ({i}, 'developer');"
            )
        })
        .collect();
    fx.exec(&rows);
    // A minute's period and no commit: the tag stays the same throughout.
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "60000")]);
    bin.wait_all_ok();
    for (encoding, decode) in [
        (
            "gzip",
            (|b: &[u8], out: &mut Vec<u8>| flate2::read::GzDecoder::new(b).read_to_end(out).map(|_| ()))
                as fn(&[u8], &mut Vec<u8>) -> std::io::Result<()>,
        ),
        ("br", |b, out| brotli::Decompressor::new(b, 4096).read_to_end(out).map(|_| ())),
        ("zstd", |b, out| zstd::Decoder::new(b)?.read_to_end(out).map(|_| ())),
    ] {
        let before = shared_compressions(&bin, encoding);
        let answers: Vec<(String, Vec<u8>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        let resp = support::client()
                            .get(bin.url("/metrics"))
                            .header("Accept-Encoding", encoding)
                            .send()
                            .expect("get");
                        let ce = resp
                            .headers()
                            .get("content-encoding")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        (ce, resp.bytes().expect("body").to_vec())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("request")).collect()
        });
        let made = shared_compressions(&bin, encoding) - before;
        assert!((1.0..=3.0).contains(&made), "{encoding}: {made} compressions for 16 requests");
        for (ce, body) in &answers {
            assert_eq!(ce, encoding);
            let mut json = Vec::new();
            decode(body, &mut json).unwrap_or_else(|e| panic!("{encoding}: {e}"));
            let m: serde_json::Value = serde_json::from_slice(&json).expect("the envelope");
            assert_eq!(m["agents"].as_array().map(Vec::len), Some(1500), "{encoding}");
        }
    }
}

/// `serve::run` (issue 32, a thin binary): the library runs what the binary
/// runs, from settings to a clean stop when the caller's shutdown future
/// completes; it takes no signal of the process. A port in use is an error
/// before anything starts.
#[test]
fn serve_run_serves_until_its_shutdown_future_completes() {
    let fx = Fixture::one_of_each();
    let port = support::free_port();
    let mut settings = fast_settings(&fx.path);
    settings.bind = format!("127.0.0.1:{port}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let run_settings = settings.clone();
    let thread = std::thread::spawn(move || {
        let result = actix_web::rt::System::new().block_on(orchmirror::serve::run(&run_settings, async {
            let _ = stop_rx.await;
        }));
        let _ = done_tx.send(result.map_err(|e| e.to_string()));
    });
    let base = format!("http://127.0.0.1:{port}");
    let m = support::wait_for(Duration::from_secs(15), "the mirror serves", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        let m = support::get_json(&format!("{base}/metrics"));
        (m["schema_version"] == 1).then_some(m)
    });
    assert!(m["queue"].is_object(), "{m}");

    // The same address again: refused before anything starts.
    let again = actix_web::rt::System::new().block_on(orchmirror::serve::run(&settings, std::future::pending()));
    let e = again.expect_err("the port is in use");
    assert!(e.to_string().starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")), "{e}");

    let _ = stop_tx.send(());
    let result = done_rx.recv_timeout(Duration::from_secs(15)).expect("run returns once shutdown completes");
    assert_eq!(result, Ok(()));
    let _ = thread.join();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the port is released");
}
