//! `deploy/`: the example Prometheus rules pass their `promtool` unit tests,
//! and every metric the rules and the Grafana dashboard query exists in a
//! real scrape of the demo.

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use support::{Binary, Serves};

fn deploy(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(rel)
}

/// The metric names (not recording rules, functions or labels) in PromQL text.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut word = String::new();
    let mut in_braces = 0;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        let is_metric = ["orch_", "orchmirror_", "process_"].iter().any(|p| word.starts_with(p)) && !word.contains(':');
        if is_metric && in_braces == 0 {
            into.insert(std::mem::take(&mut word));
        }
        word.clear();
        match c {
            '{' => in_braces += 1,
            '}' => in_braces -= 1,
            _ => {}
        }
    }
}

fn queried() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let rules = std::fs::read_to_string(deploy("prometheus/orchmirror.rules.yml")).expect("rules");
    for line in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        metric_names(line, &mut names);
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/orchmirror-dashboard.json")).expect("dashboard"))
            .expect("the dashboard is JSON");
    fn walk(v: &serde_json::Value, names: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    metric_names(e, names);
                }
                m.values().for_each(|v| walk(v, names));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, names)),
            _ => {}
        }
    }
    walk(&dashboard, &mut names);
    let templating = dashboard["templating"]["list"][0]["definition"].as_str().unwrap_or_default().to_owned();
    metric_names(&templating, &mut names);
    names
}

#[test]
fn every_metric_the_rules_and_dashboard_query_is_scraped() {
    let names = queried();
    assert!(names.len() >= 15, "{names:?}");
    let bin = Binary::start(&[]); // the demo: running agents, every family present
    bin.wait_all_ok();
    let scraped: BTreeSet<String> = support::wait_for(std::time::Duration::from_secs(15), "agent CPU series", || {
        let (_, _, body) = support::get(&bin.url("/metrics/prometheus"));
        let names: BTreeSet<String> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
            .collect();
        names.contains("orch_agent_cpu_seconds_total").then_some(names)
    });
    let missing: Vec<&String> = names.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(missing.is_empty(), "queried but not scraped: {missing:?}\nscraped: {scraped:?}");
}

#[test]
fn the_dashboard_imports_with_a_datasource_input() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/orchmirror-dashboard.json")).expect("dashboard"))
            .expect("JSON");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let panels = dashboard["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        assert!(p["targets"].as_array().is_some_and(|t| !t.is_empty()), "{}", p["title"]);
    }
}

#[test]
fn the_example_rules_pass_promtool() {
    let Some(promtool) = support::system_tool("promtool") else { return };
    let dir = deploy("prometheus");
    for args in [["check", "rules", "orchmirror.rules.yml"], ["test", "rules", "orchmirror.rules.test.yml"]] {
        let out = Command::new(&promtool).args(args).current_dir(&dir).output().expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `deploy/systemd/orchmirror.service` passes `systemd-analyze verify`
/// without a warning (its binary path pointed at this build), and the
/// settings it gives are ones the binary starts with.
#[test]
fn the_systemd_unit_verifies_and_its_settings_start_the_mirror() {
    let unit = std::fs::read_to_string(deploy("systemd/orchmirror.service")).expect("read the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/orchmirror\n"), "the unit runs the installed binary");
    let env: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("KEY=VALUE: {kv}"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["ORCH_DB_PATH", "ORCH_BIND", "ORCH_LOG_FORMAT"]);
    // Its settings, with this test's database and port: the mirror serves.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orch.sqlite");
    orchmirror::tools::generate::generate(&db, &orchmirror::tools::generate::Spec::jobs(200)).expect("generate");
    let db_s = db.display().to_string();
    let mut given: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| k != "ORCH_DB_PATH" && k != "ORCH_BIND")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    given.push(("ORCH_DB_PATH", &db_s));
    let bin = Binary::start(&given);
    bin.wait_all_ok();

    let Some(analyze) = support::system_tool("systemd-analyze") else { return };
    let here = dir.path().join("orchmirror.service");
    let exe = env!("CARGO_BIN_EXE_orchmirror");
    std::fs::write(&here, unit.replace("/usr/local/bin/orchmirror", exe)).expect("write the unit");
    let out = Command::new(&analyze).arg("verify").arg(&here).output().expect("run systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(said.trim().is_empty(), "systemd-analyze verify warned: {said}");
    // The check is real: an unknown key is a warning it prints.
    std::fs::write(&here, unit.replace("/usr/local/bin/orchmirror", exe).replace("UMask=", "UMaskk=")).expect("write");
    let out = Command::new(&analyze).arg("verify").arg(&here).output().expect("run systemd-analyze");
    assert!(String::from_utf8_lossy(&out.stderr).contains("UMaskk"), "systemd-analyze did not see the bad key");
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One instant query against Prometheus's HTTP API: the result vector.
fn prom_query(base: &str, query: &str) -> Vec<serde_json::Value> {
    let client =
        reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(5)).build().expect("client");
    let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/query"), [("query", query)]).expect("url");
    let Ok(resp) = client.get(url).send() else {
        return Vec::new();
    };
    let body: serde_json::Value = resp.json().unwrap_or_default();
    assert_ne!(body["status"], "error", "{query}: {body}");
    body["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The value of one sample line of an exposition (`name{labels} value`).
fn exposed(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Several orchestrator hosts: one mirror each, one Prometheus scraping them
/// all through `file_sd` with the example rules loaded. Each mirror's series
/// carry its own `instance` and hold its own values, and every query of the
/// dashboard (its `$instance` selector on all) returns data.
#[test]
fn two_mirrors_scraped_by_one_prometheus_are_told_apart() {
    let Some(prometheus) = support::system_tool("prometheus") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // One host in demo mode (running agents with real pids: every family),
    // one on a generated database.
    let a = Binary::start(&[]);
    let db = dir.path().join("b.sqlite");
    orchmirror::tools::generate::generate(&db, &orchmirror::tools::generate::Spec::jobs(3000)).expect("generate");
    let b = Binary::start(&[("ORCH_DB_PATH", &db.display().to_string())]);
    a.wait_all_ok();
    b.wait_all_ok();
    let targets: Vec<String> = [&a, &b].iter().map(|m| format!("127.0.0.1:{}", m.port)).collect();
    std::fs::write(
        dir.path().join("targets.json"),
        serde_json::json!([{ "targets": targets, "labels": { "job": "orchmirror" } }]).to_string(),
    )
    .expect("write targets");
    let rules = deploy("prometheus/orchmirror.rules.yml");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  \
             - job_name: orchmirror\n    file_sd_configs:\n      - files: [{}]\n",
            rules.display(),
            dir.path().join("targets.json").display()
        ),
    )
    .expect("write config");
    let port = support::free_port();
    let _prom = Killed(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let wait = std::time::Duration::from_secs(60);

    // Two instances, named by their targets.
    let instances: BTreeSet<String> = support::wait_for(wait, "both mirrors scraped", || {
        let r = prom_query(&base, "orchmirror_build_info");
        let set: BTreeSet<String> =
            r.iter().filter_map(|s| s["metric"]["instance"].as_str().map(str::to_owned)).collect();
        (set.len() == 2).then_some(set)
    });
    assert_eq!(instances, targets.iter().cloned().collect::<BTreeSet<_>>());
    // Each instance's series hold that mirror's own values (the demo's move,
    // so compare against the mirror's exposition until a scrape matches it).
    for (mirror, target) in [(&a, &targets[0]), (&b, &targets[1])] {
        let series = "orch_jobs{status=\"done\"}";
        support::wait_for(wait, &format!("{target}'s done jobs in Prometheus"), || {
            let (_, _, body) = support::get(&mirror.url("/metrics/prometheus"));
            let own = exposed(&body, series)?;
            let q = format!("orch_jobs{{status=\"done\",instance=\"{target}\"}}");
            let r = prom_query(&base, &q);
            let v: f64 = r.first()?["value"][1].as_str()?.parse().ok()?;
            (v == own).then_some(())
        });
    }
    let a_done = prom_query(&base, &format!("orch_jobs{{status=\"done\",instance=\"{}\"}}", targets[0]));
    let b_done = prom_query(&base, &format!("orch_jobs{{status=\"done\",instance=\"{}\"}}", targets[1]));
    assert_ne!(a_done[0]["value"][1], b_done[0]["value"][1], "the two databases differ, and so do their series");

    // Every dashboard query, over both hosts, returns data (recording rules included).
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/orchmirror-dashboard.json")).expect("dashboard"))
            .expect("JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let q = expr.replace("$instance", ".*").replace("$__rate_interval", "30s");
            // Agent CPU needs pids: only the demo host has them.
            let min_hosts = if expr.contains("agent_cpu") { 1 } else { 2 };
            support::wait_for(wait, &format!("data from {min_hosts} hosts for {:?}: {q}", panel["title"]), || {
                let r = prom_query(&base, &q);
                let hosts: BTreeSet<String> =
                    r.iter().filter_map(|s| s["metric"]["instance"].as_str().map(str::to_owned)).collect();
                (hosts.len() >= min_hosts).then_some(())
            });
        }
    }
}
