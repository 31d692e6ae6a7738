//! The Prometheus exposition, parsed with a real parser, against fixtures;
//! content negotiation on /metrics; self-telemetry counters that move.

use crate::support;

use std::time::Duration;

use orchmirror::SectionName;
use prometheus_parse::{Scrape, Value};
use support::{Fixture, InProcess, Serves, fast_settings, wait_for};

fn scrape_raw(url: &str, accept: Option<&str>) -> (String, String) {
    let mut req = support::client().get(url);
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let resp = req.send().expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (ct, resp.text().expect("body"))
}

fn parse(body: &str) -> Scrape {
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses as Prometheus text")
}

fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples.iter().find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))).map(|x| {
        match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        }
    })
}

fn is_counter(s: &Scrape, metric: &str) -> bool {
    s.samples.iter().any(|x| x.metric == metric && matches!(x.value, Value::Counter(_)))
}

fn exposition_fixture() -> Fixture {
    let fx = Fixture::new();
    fx.exec(
        "INSERT INTO tasks (id, work_item_id, stage, updated_at) VALUES
            (1, 'A', 'review', datetime('now', '-100 seconds')), (2, 'B', 'review', datetime('now', '-40 seconds')),
            (3, 'C', 'develop', datetime('now', '-5 seconds')), (4, 'D', 'done', datetime('now'));
         INSERT INTO jobs (id, agent, status, attempts, created_at, started_at) VALUES
            (1, 'dev', 'queued', 0, datetime('now', '-60 seconds'), NULL),
            (2, 'dev', 'running', 3, datetime('now'), datetime('now', '-30 seconds')),
            (3, 'dev', 'done', 2, datetime('now'), datetime('now'));
         INSERT INTO agent_runs (id, job_id, agent, cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens)
            VALUES (7, 2, 'developer', NULL, NULL, NULL, NULL, NULL), (8, 3, 'dev', 1.5, 100, 20, 5, 1);",
    );
    fx
}

#[test]
fn the_exposition_carries_the_raw_signal_and_self_telemetry() {
    let fx = exposition_fixture();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let (ct, body) = scrape_raw(&bin.url("/metrics/prometheus"), None);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!body.contains("# EOF"));
    let s = parse(&body);

    assert_eq!(value(&s, "orch_tasks_active", &[("stage", "review")]), Some(2.0));
    assert_eq!(value(&s, "orch_tasks_active", &[("stage", "develop")]), Some(1.0));
    assert_eq!(value(&s, "orch_tasks_active", &[("stage", "done")]), None);
    let age = value(&s, "orch_task_stage_age_seconds_max", &[("stage", "review")]).expect("max age");
    assert!((99.0..200.0).contains(&age), "{age}");
    for (status, n) in [("queued", 1.0), ("running", 1.0), ("done", 1.0), ("failed", 0.0), ("cancelled", 0.0)] {
        assert_eq!(value(&s, "orch_jobs", &[("status", status)]), Some(n), "{status}");
    }
    assert_eq!(value(&s, "orch_queue_depth", &[]), Some(1.0));
    assert!(value(&s, "orch_queue_oldest_age_seconds", &[]).is_some_and(|a| a >= 59.0));
    assert_eq!(value(&s, "orch_jobs_retried", &[]), Some(2.0));
    assert_eq!(value(&s, "orch_job_retries", &[]), Some(3.0));
    assert_eq!(value(&s, "orch_job_max_attempts", &[]), Some(3.0));
    assert_eq!(value(&s, "orch_agents_running", &[]), Some(1.0));
    let rt = value(&s, "orch_agent_runtime_seconds", &[("agent", "developer"), ("job_id", "2"), ("run_id", "7")]);
    assert!(rt.is_some_and(|r| r >= 29.0), "{rt:?}");
    assert_eq!(value(&s, "orch_agent_cpu_seconds_total", &[("job_id", "2")]), None, "no pid, no CPU series");
    assert_eq!(value(&s, "orch_agent_runs_total", &[]), Some(2.0));
    assert_eq!(value(&s, "orch_cost_usd_total", &[]), Some(1.5));
    for (kind, n) in [("input", 100.0), ("output", 20.0), ("cache_read", 5.0), ("cache_creation", 1.0)] {
        assert_eq!(value(&s, "orch_tokens_total", &[("kind", kind)]), Some(n), "{kind}");
    }
    for counter in
        ["orch_agent_runs_total", "orch_cost_usd_total", "orch_tokens_total", "orchmirror_refresh_errors_total"]
    {
        assert!(is_counter(&s, counter), "{counter} is typed as a counter");
    }

    // Every self-telemetry family, one series per section, from the start.
    for section in support::SECTIONS {
        let l = [("section", section)];
        assert_eq!(value(&s, "orchmirror_section_up", &l), Some(1.0), "{section}");
        assert!(value(&s, "orchmirror_section_age_seconds", &l).is_some(), "{section}");
        for family in [
            "orchmirror_refresh_errors_total",
            "orchmirror_refresh_skipped_total",
            "orchmirror_snapshot_timeouts_total",
            "orchmirror_actor_restarts_total",
            "orchmirror_subscriber_drops_total",
        ] {
            assert!(value(&s, family, &l).is_some(), "{family}{{section={section}}}");
        }
        assert!(
            s.samples.iter().any(|x| x.metric == "orchmirror_refresh_duration_seconds"
                && x.labels.get("section") == Some(section)
                && matches!(x.value, Value::Histogram(_))),
            "refresh duration histogram for {section}"
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(value(&s, "orchmirror_build_info", &[("version", version)]), Some(1.0));
}

#[test]
fn metrics_negotiates_between_json_and_the_exposition() {
    let fx = exposition_fixture();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let url = bin.url("/metrics");
    let prometheus_default = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (ct, body) = scrape_raw(&url, Some(prometheus_default));
    assert!(ct.starts_with("application/openmetrics-text; version=1.0.0"), "{ct}");
    assert!(body.ends_with("# EOF\n") && body.contains("orch_queue_depth"), "{body}");
    let (ct, body) = scrape_raw(&url, Some("text/plain;version=0.0.4"));
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(parse(&body).samples.iter().any(|x| x.metric == "orch_queue_depth"));
    for accept in [None, Some("*/*"), Some("application/json"), Some("text/plain, application/json")] {
        let (ct, body) = scrape_raw(&url, accept);
        assert_eq!(ct, "application/json", "{accept:?}");
        assert!(body.starts_with("{\"schema_version\":1"), "{accept:?}");
    }
    let (ct, _) = scrape_raw(&bin.url("/metrics/prometheus"), Some("application/openmetrics-text"));
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
}

#[test]
fn null_sections_have_no_series_and_counters_count_what_happened() {
    let fx = exposition_fixture();
    let mut settings = fast_settings(&fx.path);
    settings.refresh = orchmirror::RefreshPeriods::uniform(Duration::from_millis(1000));
    settings.snapshot_timeout = Duration::from_millis(200);
    let mirror = InProcess::start(settings);
    mirror.wait_all_ok();
    let prom = || parse(&scrape_raw(&mirror.url("/metrics/prometheus"), None).1);

    // A snapshot timeout is counted for the section that timed out.
    mirror.handle.stall_section(SectionName::AGENTS, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(50));
    let s = prom();
    assert_eq!(value(&s, "orch_agents_running", &[]), None, "a null section has no series");
    assert_eq!(value(&s, "orchmirror_section_up", &[("section", "agents")]), Some(0.0));
    assert!(value(&s, "orchmirror_snapshot_timeouts_total", &[("section", "agents")]).is_some_and(|n| n >= 1.0));
    assert_eq!(value(&s, "orchmirror_snapshot_timeouts_total", &[("section", "queue")]), Some(0.0));

    // A dead actor: no cost series while it is down; a restart is counted.
    mirror.handle.kill_section(SectionName::COST);
    wait_for(Duration::from_secs(5), "no cost series", || {
        let s = prom();
        (value(&s, "orch_cost_usd_total", &[]).is_none()
            && value(&s, "orch_tokens_total", &[("kind", "input")]).is_none())
        .then_some(())
    });
    wait_for(Duration::from_secs(15), "restart counted", || {
        let s = prom();
        (value(&s, "orchmirror_actor_restarts_total", &[("section", "cost")]) == Some(1.0)
            && value(&s, "orch_cost_usd_total", &[]) == Some(1.5))
        .then_some(())
    });

    // Quiet database: skipped refreshes are counted; a failed refresh too.
    let s = prom();
    assert!(value(&s, "orchmirror_refresh_skipped_total", &[("section", "stages")]).is_some_and(|n| n >= 1.0));
    let writer = fx.conn();
    writer.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    wait_for(Duration::from_secs(10), "errors counted", || {
        value(&prom(), "orchmirror_refresh_errors_total", &[("section", "queue")])
            .is_some_and(|n| n >= 1.0)
            .then_some(())
    });
    writer.execute_batch("COMMIT;").expect("unlock");

    // An agent that stops running disappears from the exposition at once.
    fx.exec("UPDATE jobs SET status = 'done' WHERE id = 2;");
    wait_for(Duration::from_secs(10), "agent series gone", || {
        let s = prom();
        (value(&s, "orch_agents_running", &[]) == Some(0.0)
            && !s.samples.iter().any(|x| x.metric == "orch_agent_runtime_seconds"))
        .then_some(())
    });
}

/// `process_*` as every Prometheus client names them, read from the real
/// binary's `/proc/self`, checked against what `/proc` says of its pid.
#[cfg(target_os = "linux")]
#[test]
fn process_metrics_describe_the_process() {
    let fx = exposition_fixture();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let (_, body) = scrape_raw(&bin.url("/metrics/prometheus"), None);
    let s = parse(&body);
    let get = |m: &str| value(&s, m, &[]).unwrap_or_else(|| panic!("{m} missing:\n{body}"));
    assert!(is_counter(&s, "process_cpu_seconds_total"), "{body}");
    assert!(get("process_cpu_seconds_total") >= 0.0);
    let status = std::fs::read_to_string(format!("/proc/{}/status", bin.child.id())).expect("status");
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let rss = get("process_resident_memory_bytes");
    assert!((rss / 1024.0 - rss_kb).abs() < rss_kb * 0.5 + 2048.0, "{rss} bytes against VmRSS {rss_kb} kB");
    assert!(get("process_virtual_memory_bytes") >= rss);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", bin.child.id())).expect("fd dir").count() as f64;
    let open = get("process_open_fds");
    assert!(open >= 4.0 && (open - fds).abs() <= 16.0, "process_open_fds {open}, /proc/PID/fd has {fds}");
    assert!(get("process_max_fds") >= open);
    let now = chrono::Utc::now().timestamp() as f64;
    let started = get("process_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 120.0, "started {started}, now {now}");
}

/// Every scrape lists the same series in the same order (only values move).
/// A scrape in which a section is not up (a snapshot that timed out on a
/// loaded machine) has fewer series by design; it is skipped.
#[test]
fn series_order_is_stable_between_scrapes() {
    let fx = exposition_fixture();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let series = || {
        let (_, body) = scrape_raw(&bin.url("/metrics/prometheus"), None);
        let all_up = body.lines().filter(|l| l.starts_with("orchmirror_section_up{")).all(|l| l.ends_with(" 1"));
        all_up.then(|| {
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series).to_owned())
                .collect::<Vec<_>>()
        })
    };
    let first = wait_for(Duration::from_secs(10), "a scrape with every section up", series);
    assert!(first.iter().filter(|s| s.starts_with("orch_jobs{")).count() >= 5, "{first:?}");
    let mut compared = 0;
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(150));
        if let Some(now) = series() {
            assert_eq!(now, first);
            compared += 1;
        }
    }
    assert!(compared >= 3, "only {compared} scrapes had every section up");
}

/// Issue 25, item 8: every count is printed as a whole number (`6`, never
/// `6.0`), in both formats, so one family never mixes the two spellings.
#[test]
fn counts_are_whole_numbers() {
    let fx = exposition_fixture();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let counts = [
        "orch_jobs",
        "orch_queue_depth",
        "orch_jobs_retried",
        "orch_job_retries",
        "orch_job_max_attempts",
        "orch_agents_running",
        "orch_agent_runs_total",
        "orch_tokens_total",
        "orch_tasks_active",
    ];
    for accept in [None, Some("application/openmetrics-text; version=1.0.0")] {
        let (_, body) = scrape_raw(&bin.url("/metrics/prometheus"), accept);
        for name in counts {
            let samples: Vec<&str> =
                body.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])).collect();
            assert!(!samples.is_empty(), "{name} is exposed ({accept:?}):\n{body}");
            for line in samples {
                let value = line.rsplit(' ').next().unwrap_or_default();
                assert!(value.parse::<u64>().is_ok(), "{name} as a whole number ({accept:?}): {line}");
            }
        }
    }
}
