//! A host section built outside the crate (the `custom_section` example's
//! worker pool) is a first-class section: an envelope key after `cost` and
//! before `sections`, an entry in `sections` and `/health`, its own refresh
//! period, subscriptions and series; the built-in sections do not change.

use crate::support;

#[path = "../../examples/custom_section/workers.rs"]
mod workers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use orchmirror::{MirrorHandle, SectionName, Settings, StartError, Update};
use support::{Fixture, InProcess, Serves, fast_settings, wait_for};
use workers::{Pool, Workers, WorkersView};

const WORKERS: SectionName = SectionName::new("workers");

fn pool(size: u32, busy: u32) -> Arc<Mutex<Pool>> {
    Arc::new(Mutex::new(Pool { size, busy }))
}

fn set_busy(pool: &Mutex<Pool>, busy: u32) {
    pool.lock().unwrap_or_else(|p| p.into_inner()).busy = busy;
}

#[test]
fn a_host_section_is_served_like_a_built_in_one() {
    let fx = Fixture::new();
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');");
    let p = pool(4, 1);
    let shared = Arc::clone(&p);
    let mirror = InProcess::start_with(fast_settings(&fx.path), move |b| b.section(Workers(shared)));

    let m = wait_for(Duration::from_secs(15), "every section ok", || {
        let m = mirror.metrics();
        (support::all_ok(&m) && m["sections"]["workers"]["status"] == "ok").then_some(m)
    });
    // Its key comes after cost and before sections (top level and in sections);
    // the built-in ones keep their place and shape.
    let (_, _, raw) = support::get(&mirror.url("/metrics"));
    let top = ["schema_version", "generated_at", "clk_tck", "stages", "queue", "agents", "cost", "workers", "sections"];
    let at = |key: &str, from: usize| raw[from..].find(&format!("\"{key}\":")).map(|i| i + from);
    let mut from = 0;
    for key in top {
        from = at(key, from).unwrap_or_else(|| panic!("{key} missing or out of order in {raw}"));
    }
    for key in ["stages", "queue", "agents", "cost", "workers"] {
        from = at(key, from).unwrap_or_else(|| panic!("sections.{key} missing or out of order in {raw}"));
    }
    assert_eq!(m["sections"].as_object().map(|o| o.len()), Some(5));
    assert_eq!(m["workers"], serde_json::json!({"size": 4, "busy": 1, "idle": 3}));
    assert_eq!(m["queue"]["depth"], 1);

    // A change in the host's pool (no database commit) is served within a refresh or two.
    set_busy(&p, 3);
    wait_for(Duration::from_secs(15), "the pool's change", || (mirror.metrics()["workers"]["busy"] == 3).then_some(()));

    // /health, the exposition's raw signal and self-telemetry all carry it.
    let health = support::get_json(&mirror.url("/health"));
    assert_eq!(health["sections"]["workers"]["status"], "ok");
    assert_eq!(health["restarts"]["workers"], 0);
    let (_, _, text) = support::get(&mirror.url("/metrics/prometheus"));
    assert!(text.lines().any(|l| l == "host_workers_busy 3"), "{text}");
    assert!(text.lines().any(|l| l == r#"orchmirror_section_up{section="workers"} 1"#), "{text}");

    // The typed value comes back through the handle.
    let view = actix_web::rt::System::new().block_on(async {
        let e = mirror.handle.snapshot().await.expect("enabled");
        e.section::<Workers>().cloned()
    });
    assert_eq!(view, Some(WorkersView { size: 4, busy: 3, idle: 1 }));
}

#[test]
fn a_dead_host_section_costs_only_itself() {
    let fx = Fixture::new();
    let p = pool(2, 0);
    let mirror = InProcess::start_with(fast_settings(&fx.path), move |b| b.section(Workers(p)));
    wait_for(Duration::from_secs(15), "workers ok", || {
        (mirror.metrics()["sections"]["workers"]["status"] == "ok").then_some(())
    });
    mirror.handle.stall_section(WORKERS, Duration::from_secs(2));
    let m = wait_for(Duration::from_secs(10), "workers timeout", || {
        let m = mirror.metrics();
        (m["sections"]["workers"]["status"] == "timeout").then_some(m)
    });
    assert!(m["workers"].is_null());
    assert!(support::all_ok(&m), "the built-in sections are untouched: {}", m["sections"]);
}

/// Collects the busy counts a subscriber receives.
struct Busy(Arc<Mutex<Vec<(u64, u32)>>>);

impl Actor for Busy {
    type Context = Context<Self>;
}

impl Handler<Update> for Busy {
    type Result = ();
    fn handle(&mut self, u: Update, _: &mut Context<Self>) {
        if let Some(v) = u.data.get::<Workers>() {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push((u.seq, v.busy));
        }
    }
}

#[test]
fn its_own_period_and_its_own_subscriptions() {
    let fx = Fixture::new();
    let p = pool(8, 0);
    let mut settings = fast_settings(&fx.path);
    // The built-in sections refresh slowly; the host's section every 20 ms.
    settings.refresh =
        orchmirror::RefreshPeriods::uniform(Duration::from_secs(60)).with(WORKERS, Duration::from_millis(20));
    let shared = Arc::clone(&p);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    System::new().block_on(async move {
        let handle = MirrorHandle::builder(settings).section(Workers(shared)).start().expect("start");
        let id = handle.subscribe(WORKERS, Busy(log).start().recipient());
        assert!(id.is_some(), "the host section takes subscribers");
        for busy in 1..=5 {
            actix_web::rt::time::sleep(Duration::from_millis(150)).await;
            set_busy(&p, busy);
        }
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        let counters = handle.refresh_counters();
        // Over ~1.2 s: dozens of workers refreshes, one of each built-in section.
        assert!(counters[WORKERS].loaded + counters[WORKERS].skipped >= 10, "{counters:?}");
        assert!(counters[SectionName::QUEUE].loaded + counters[SectionName::QUEUE].skipped <= 2, "{counters:?}");
        handle.stop();
    });
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let busy: Vec<u32> = seen.iter().map(|(_, b)| *b).collect();
    assert_eq!(busy, [0, 1, 2, 3, 4, 5], "the first value, then one update per change: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1), "sequence numbers without gaps: {seen:?}");
}

#[test]
fn names_must_be_unique_and_periods_must_name_a_section() {
    let fx = Fixture::new();
    System::new().block_on(async move {
        let settings = fast_settings(&fx.path);
        let twice = MirrorHandle::builder(settings.clone())
            .section(Workers(pool(1, 0)))
            .section(Workers(pool(1, 0)))
            .start()
            .map(|_| ());
        assert!(matches!(twice, Err(StartError::DuplicateSection(n)) if n == WORKERS), "{twice:?}");

        let typo = Settings::load(
            [("ORCH_WORKER_REFRESH_MS".to_owned(), "100".to_owned())],
            &orchmirror::CliOverrides::default(),
        )
        .expect("loads: periods are checked against the registered sections");
        let mut typo_settings = typo.clone();
        typo_settings.db_path = Some(fx.path.clone());
        let err = MirrorHandle::builder(typo_settings).section(Workers(pool(1, 0))).start().map(|_| ());
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("ORCH_WORKER_REFRESH_MS") && msg.contains("workers"), "{msg}");
    });
}

/// The example itself, as a user runs it: its section is served over HTTP.
#[test]
fn the_example_serves_its_section() {
    // `cargo test` builds the examples beside the test binaries.
    let exe = std::env::current_exe().ok().and_then(|t| Some(t.parent()?.parent()?.join("examples/custom_section")));
    let Some(exe) = exe.filter(|e| e.exists()) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: the custom_section example was not built");
        eprintln!("skipped: build the example first (cargo test builds it; or cargo build --example custom_section)");
        return;
    };
    let port = support::free_port();
    let child = std::process::Command::new(exe)
        .env("ORCH_BIND", format!("127.0.0.1:{port}"))
        .env("ORCH_REFRESH_MS", "100")
        .env_remove("ORCH_DB_PATH")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the example");
    let example = support::Binary { child, base: format!("http://127.0.0.1:{port}"), port };
    let m = wait_for(Duration::from_secs(20), "the example's workers section", || {
        let m = support::client().get(example.url("/metrics")).send().ok()?.json::<serde_json::Value>().ok()?;
        (m["sections"]["workers"]["status"] == "ok").then_some(m)
    });
    assert_eq!(m["workers"]["size"], 4);
    assert!(support::all_ok(&m), "{}", m["sections"]);
}

/// The embed example, as README describes it: on the database it makes, its
/// subscriber prints queue depth changes (issue 34: the database never
/// changed, so it printed one line and nothing after).
#[test]
fn the_embed_example_prints_queue_depth_changes() {
    let exe = std::env::current_exe().ok().and_then(|t| Some(t.parent()?.parent()?.join("examples/embed")));
    let Some(exe) = exe.filter(|e| e.exists()) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: the embed example was not built");
        eprintln!("skipped: build the example first (cargo test builds it; or cargo build --example embed)");
        return;
    };
    let port = support::free_port();
    let mut child = std::process::Command::new(exe)
        .env("ORCH_BIND", format!("127.0.0.1:{port}"))
        .env_remove("ORCH_DB_PATH")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the example");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The first line of depth is from "?"; a change after it needs the writer.
    let mut depths = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while depths.len() < 3 && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && line.starts_with("queue depth ")
        {
            depths.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(depths.len() >= 3, "the subscriber printed changes: {depths:?}");
    assert!(depths[0].starts_with("queue depth ? -> 2"), "{depths:?}");
}
