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
