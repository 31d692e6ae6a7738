//! Configuration: every variable changes its setting; every bad value stops
//! start-up naming the variable and the value; layers override in order.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use orchmirror::{CliOverrides, SectionName, Settings};
use support::{Binary, Fixture, Serves};

fn load(env: &[(&str, &str)]) -> Result<Settings, orchmirror::ConfigError> {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    Settings::load(env, &CliOverrides::default())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn defaults_match_the_contract() {
    let s = load(&[]).expect("defaults");
    assert_eq!(s.db_path, None);
    assert_eq!(s.bind, "127.0.0.1:8787");
    assert!(s.metrics_enabled);
    assert_eq!(s.refresh, orchmirror::RefreshPeriods::uniform(ms(1000)));
    assert_eq!(s.snapshot_timeout, ms(200));
    assert_eq!(s.max_stale, ms(30_000));
    assert_eq!(s.pid_start_tolerance, Duration::from_secs(10));
    assert_eq!(s.reconcile, ms(300_000));
    assert!(s.ui_enabled);
    assert_eq!(s.max_streams, None, "derived from the open-files limit when the server starts");
    assert_eq!(s.stream_heartbeat, ms(15_000));
    assert_eq!(s.coalesce, ms(20));
    assert_eq!(s.cpu_budget_percent, 5.0);
}

#[test]
fn every_variable_changes_its_setting() {
    let fx = Fixture::new();
    let db = fx.path.display().to_string();
    let s = load(&[("ORCH_DB_PATH", &db)]).expect("db");
    assert_eq!(s.db_path, Some(fx.path.clone()));
    assert_eq!(load(&[("ORCH_BIND", "127.0.0.1:9999")]).expect("bind").bind, "127.0.0.1:9999");
    assert_eq!(load(&[("ORCH_SNAPSHOT_TIMEOUT_MS", "750")]).expect("t").snapshot_timeout, ms(750));
    assert_eq!(load(&[("ORCH_MAX_STALE_MS", "1234")]).expect("ms").max_stale, ms(1234));
    assert_eq!(
        load(&[("ORCH_PID_START_TOLERANCE_S", "2.5")]).expect("tol").pid_start_tolerance,
        Duration::from_millis(2500)
    );

    assert_eq!(load(&[("ORCH_RECONCILE_MS", "60000")]).expect("reconcile").reconcile, ms(60_000));
    assert_eq!(load(&[]).expect("defaults").log_format, orchmirror::LogFormat::Text);
    assert_eq!(load(&[("ORCH_LOG_FORMAT", "JSON")]).expect("log format").log_format, orchmirror::LogFormat::Json);

    assert!(!load(&[("ORCH_UI_ENABLED", "off")]).expect("ui").ui_enabled);
    assert!(load(&[("ORCH_UI_ENABLED", "YES")]).expect("ui").ui_enabled);
    assert_eq!(load(&[("ORCH_MAX_STREAMS", "3")]).expect("max streams").max_streams, Some(3));
    assert_eq!(load(&[("ORCH_MAX_STREAMS", "0")]).expect("no streams").max_streams, Some(0));
    assert_eq!(load(&[("ORCH_STREAM_HEARTBEAT_MS", "2500")]).expect("heartbeat").stream_heartbeat, ms(2500));
    assert_eq!(load(&[("ORCH_COALESCE_MS", "75")]).expect("coalesce").coalesce, ms(75));
    assert_eq!(load(&[("ORCH_CPU_BUDGET_PERCENT", "2.5")]).expect("budget").cpu_budget_percent, 2.5);
    assert_eq!(
        load(&[("ORCH_ALLOWED_HOSTS", " a.example , b ")]).expect("hosts").allowed_hosts,
        vec!["a.example".to_owned(), "b".to_owned()]
    );
    assert_eq!(load(&[("ORCH_SOCKET_MODE", "0600")]).expect("mode").socket_mode, 0o600);
    assert_eq!(load(&[("ORCH_SOCKET_GROUP", "metrics")]).expect("group").socket_group.as_deref(), Some("metrics"));
    assert_eq!(
        load(&[("ORCH_WEB_CONFIG_FILE", "/etc/web.yml")]).expect("web config").web_config_file,
        Some(PathBuf::from("/etc/web.yml"))
    );

    let all = load(&[("ORCH_REFRESH_MS", "500")]).expect("refresh");
    assert_eq!(all.refresh, orchmirror::RefreshPeriods::uniform(ms(500)));
    let each = load(&[
        ("ORCH_REFRESH_MS", "500"),
        ("ORCH_STAGES_REFRESH_MS", "11"),
        ("ORCH_QUEUE_REFRESH_MS", "22"),
        ("ORCH_AGENTS_REFRESH_MS", "33"),
        ("ORCH_COST_REFRESH_MS", "44"),
    ])
    .expect("per section");
    assert_eq!(
        (
            each.refresh.get(SectionName::STAGES),
            each.refresh.get(SectionName::QUEUE),
            each.refresh.get(SectionName::AGENTS),
            each.refresh.get(SectionName::COST)
        ),
        (ms(11), ms(22), ms(33), ms(44))
    );
    let one = load(&[("ORCH_REFRESH_MS", "500"), ("ORCH_AGENTS_REFRESH_MS", "50")]).expect("one");
    assert_eq!(
        (one.refresh.get(SectionName::AGENTS), one.refresh.get(SectionName::QUEUE)),
        (ms(50), ms(500)),
        "the others keep ORCH_REFRESH_MS"
    );

    for (v, want) in [
        ("true", true),
        ("FALSE", false),
        ("1", true),
        ("0", false),
        ("Yes", true),
        ("no", false),
        ("ON", true),
        ("off", false),
    ] {
        assert_eq!(load(&[("ORCH_METRICS_ENABLED", v)]).expect(v).metrics_enabled, want, "{v}");
    }
}

#[test]
fn bad_values_are_rejected_naming_the_variable_and_value() {
    let cases: &[(&str, &str)] = &[
        ("ORCH_DB_PATH", "/nonexistent/orch.sqlite"),
        ("ORCH_DB_PATH", ""),
        ("ORCH_DB_PATH", "/tmp"),
        ("ORCH_BIND", "not-an-address"),
        ("ORCH_BIND", "127.0.0.1:99999"),
        ("ORCH_METRICS_ENABLED", "maybe"),
        ("ORCH_REFRESH_MS", "abc"),
        ("ORCH_REFRESH_MS", "9"),
        ("ORCH_REFRESH_MS", "3600001"),
        ("ORCH_REFRESH_MS", "-5"),
        ("ORCH_STAGES_REFRESH_MS", "0"),
        ("ORCH_QUEUE_REFRESH_MS", "1.5"),
        ("ORCH_AGENTS_REFRESH_MS", "soon"),
        ("ORCH_COST_REFRESH_MS", "99999999999"),
        ("ORCH_SNAPSHOT_TIMEOUT_MS", "0"),
        ("ORCH_SNAPSHOT_TIMEOUT_MS", "60001"),
        ("ORCH_MAX_STALE_MS", "forever"),
        ("ORCH_PID_START_TOLERANCE_S", "-1"),
        ("ORCH_PID_START_TOLERANCE_S", "NaN"),
        ("ORCH_RECONCILE_MS", "999"),
        ("ORCH_RECONCILE_MS", "86400001"),
        ("ORCH_RECONCILE_MS", "hourly"),
        ("ORCH_LOG_FORMAT", "xml"),
        ("ORCH_UI_ENABLED", "sometimes"),
        ("ORCH_MAX_STREAMS", "100001"),
        ("ORCH_MAX_STREAMS", "-1"),
        ("ORCH_MAX_STREAMS", "many"),
        ("ORCH_STREAM_HEARTBEAT_MS", "999"),
        ("ORCH_STREAM_HEARTBEAT_MS", "3600001"),
        ("ORCH_COALESCE_MS", "0"),
        ("ORCH_COALESCE_MS", "3600001"),
        ("ORCH_COALESCE_MS", "soon"),
        ("ORCH_CPU_BUDGET_PERCENT", "0"),
        ("ORCH_CPU_BUDGET_PERCENT", "100.5"),
        ("ORCH_CPU_BUDGET_PERCENT", "NaN"),
        ("ORCH_CPU_BUDGET_PERCENT", "5%"),
    ];
    for (var, value) in cases {
        let err = load(&[(var, value)]).err().unwrap_or_else(|| panic!("{var}={value:?} was accepted"));
        let msg = err.to_string();
        assert!(msg.contains(var) && msg.contains(&format!("{value:?}")), "{var}={value:?}: {msg}");
    }
}

#[test]
fn the_binary_exits_non_zero_on_each_bad_value() {
    // One bad value per variable of README's "Configuration" table, through the real binary.
    for (var, value) in [
        ("ORCH_DB_PATH", "/nonexistent/orch.sqlite"),
        ("ORCH_BIND", "nowhere"),
        ("ORCH_METRICS_ENABLED", "perhaps"),
        ("ORCH_REFRESH_MS", "5"),
        ("ORCH_STAGES_REFRESH_MS", "x"),
        ("ORCH_QUEUE_REFRESH_MS", "x"),
        ("ORCH_AGENTS_REFRESH_MS", "x"),
        ("ORCH_COST_REFRESH_MS", "x"),
        ("ORCH_SNAPSHOT_TIMEOUT_MS", "0"),
        ("ORCH_MAX_STALE_MS", "-1"),
        ("ORCH_PID_START_TOLERANCE_S", "ten"),
        ("ORCH_RECONCILE_MS", "10"),
        ("ORCH_LOG_FORMAT", "yaml"),
        ("ORCH_UI_ENABLED", "maybe"),
        ("ORCH_MAX_STREAMS", "lots"),
        ("ORCH_STREAM_HEARTBEAT_MS", "10"),
        ("ORCH_COALESCE_MS", "0"),
        ("ORCH_CPU_BUDGET_PERCENT", "0.01"),
        ("ORCH_ALLOWED_HOSTS", "good.example,bad name"),
        ("ORCH_SOCKET_MODE", "0999"),
        ("ORCH_SOCKET_GROUP", "no/slash"),
    ] {
        let port = support::free_port().to_string();
        let bind = format!("127.0.0.1:{port}");
        let out = Binary::command(&[("ORCH_BIND", &bind), (var, value)]).output().expect("run orchmirror");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert!(stderr.contains(var) && stderr.contains(value), "{var}={value}: {stderr}");
        // Nothing was served on a half-valid configuration.
        assert!(std::net::TcpStream::connect(&bind).is_err(), "{var}: something listened");
    }
}

#[test]
fn a_period_for_a_section_that_does_not_exist_is_a_start_up_error() {
    let bind = format!("127.0.0.1:{}", support::free_port());
    let out =
        Binary::command(&[("ORCH_BIND", &bind), ("ORCH_STAGE_REFRESH_MS", "100")]).output().expect("run orchmirror");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ORCH_STAGE_REFRESH_MS") && stderr.contains("stages, queue, agents, cost"), "{stderr}");
    assert!(std::net::TcpStream::connect(&bind).is_err(), "something listened");
    // In a file too: `stage_refresh_ms` is read as a section's period, then found to name none.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("orchmirror.toml");
    std::fs::write(&file, "stage_refresh_ms = 100\n").expect("write");
    let out = Binary::command(&[("ORCH_BIND", &bind), ("ORCH_CONFIG_FILE", &file.display().to_string())])
        .output()
        .expect("run orchmirror");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ORCH_STAGE_REFRESH_MS"));
}

#[test]
fn file_then_environment_then_flags() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("orchmirror.toml");
    std::fs::write(
        &file,
        format!(
            "bind = \"127.0.0.1:7001\"\nrefresh_ms = 250\nqueue_refresh_ms = 300\nmax_stale_ms = 5000\n\
             metrics_enabled = true\npid_start_tolerance_s = 3\ndb_path = {:?}\n",
            fx.path.display().to_string()
        ),
    )
    .expect("write toml");
    let f = file.display().to_string();
    let from_file = load(&[("ORCH_CONFIG_FILE", &f)]).expect("file");
    assert_eq!(from_file.bind, "127.0.0.1:7001");
    assert_eq!(
        (from_file.refresh.get(SectionName::STAGES), from_file.refresh.get(SectionName::QUEUE)),
        (ms(250), ms(300))
    );
    assert_eq!(from_file.max_stale, ms(5000));
    assert_eq!(from_file.pid_start_tolerance, Duration::from_secs(3));
    assert_eq!(from_file.db_path.as_deref(), Some(fx.path.as_path()));

    let env_wins =
        load(&[("ORCH_CONFIG_FILE", &f), ("ORCH_BIND", "127.0.0.1:7002"), ("ORCH_REFRESH_MS", "400")]).expect("env");
    assert_eq!(env_wins.bind, "127.0.0.1:7002");
    assert_eq!(
        (env_wins.refresh.get(SectionName::STAGES), env_wins.refresh.get(SectionName::QUEUE)),
        (ms(400), ms(300))
    );

    let other = Fixture::new();
    let cli = CliOverrides::new(Some(other.path.clone()), Some("127.0.0.1:7003".into()), Some(file.clone()));
    let env = [("ORCH_BIND".to_owned(), "127.0.0.1:7002".to_owned())];
    let flags_win = Settings::load(env, &cli).expect("flags");
    assert_eq!(flags_win.bind, "127.0.0.1:7003");
    assert_eq!(flags_win.db_path, Some(other.path.clone()));
    assert_eq!(flags_win.refresh.get(SectionName::QUEUE), ms(300), "--config read the file");
}

#[test]
fn file_problems_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent.toml").display().to_string();
    let e = load(&[("ORCH_CONFIG_FILE", &missing)]).expect_err("missing file rejected").to_string();
    assert!(e.contains("ORCH_CONFIG_FILE") && e.contains("absent.toml"), "{e}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "refresh_msec = 100\n").expect("write");
    let e = load(&[("ORCH_CONFIG_FILE", &typo.display().to_string())]).expect_err("typo rejected").to_string();
    assert!(e.contains("refresh_msec"), "{e}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "refresh_ms = \"fast\"\n").expect("write");
    let e = load(&[("ORCH_CONFIG_FILE", &bad.display().to_string())]).expect_err("bad rejected").to_string();
    assert!(e.contains("ORCH_REFRESH_MS") && e.contains("fast") && e.contains("bad.toml"), "{e}");

    let flag = CliOverrides::new(Some(PathBuf::from("/nonexistent/x.db")), None, None);
    let e = Settings::load(Vec::new(), &flag).expect_err("bad --db").to_string();
    assert!(e.contains("--db") && e.contains("/nonexistent/x.db"), "{e}");
}

#[test]
fn per_section_periods_really_drive_the_refresh() {
    // Queue looks once an hour, everything else every 100 ms: on a quiet
    // database (no commit to wake anyone) only the others' ages stay small.
    let fx = Fixture::new();
    let bin = fx.serve(&[("ORCH_QUEUE_REFRESH_MS", "3600000")]);
    bin.wait_all_ok();
    std::thread::sleep(Duration::from_millis(1500));
    let m = bin.metrics();
    let age = |s: &str| m["sections"][s]["age_ms"].as_i64().unwrap_or(-1);
    assert!(age("queue") >= 1400, "the queue has not looked again: {}", m["sections"]);
    for s in ["stages", "agents", "cost"] {
        assert!((0..1000).contains(&age(s)), "{s} looks every 100 ms: {}", m["sections"]);
    }
    // A commit wakes every section whatever its period (README, "Commit to visible").
    fx.exec("INSERT INTO jobs (agent, status, started_at) VALUES ('developer', 'running', datetime('now'));");
    support::wait_for(Duration::from_secs(10), "the queue to see the commit", || {
        (bin.metrics()["queue"]["counts"]["running"] == 1).then_some(())
    });
}

#[test]
fn the_pid_tolerance_decides_whether_a_process_is_the_run() {
    // The run says it started 30 s before this process did.
    let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn");
    let started = chrono::Utc::now() - chrono::Duration::seconds(30);
    let fx = Fixture::new();
    fx.exec(&format!(
        "INSERT INTO jobs (id, agent, status, started_at) VALUES (1, 'a', 'running', datetime('now'));
         INSERT INTO agent_runs (job_id, agent, pid, started_at) VALUES (1, 'a', {}, '{}');",
        child.id(),
        started.format("%Y-%m-%d %H:%M:%S")
    ));
    let strict = fx.serve(&[]);
    assert!(strict.wait_all_ok()["agents"][0]["cpu_ticks"].is_null(), "10 s default: not the run");
    let lenient = fx.serve(&[("ORCH_PID_START_TOLERANCE_S", "60")]);
    assert!(lenient.wait_all_ok()["agents"][0]["cpu_ticks"].is_u64(), "60 s: the run's process");
    let _ = child.kill();
    let _ = child.wait();
}

/// `ORCH_LOG_FORMAT=json`: every log line the binary writes is one JSON object
/// (for log shippers); the default is human-readable text.
#[test]
fn the_log_format_is_json_when_asked() {
    let fx = Fixture::one_of_each();
    let db = fx.path.display().to_string();
    for (format, json) in [("json", true), ("text", false)] {
        let mut bin = Binary::start(&[("ORCH_DB_PATH", &db), ("ORCH_LOG_FORMAT", format)]);
        let _ = bin.terminate(Duration::from_secs(5));
        let stderr = bin.stderr();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines.len() >= 2, "{format}: some log lines: {stderr}");
        for line in lines {
            let parsed = serde_json::from_str::<serde_json::Value>(line);
            if json {
                let v = parsed.unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
            } else {
                assert!(parsed.is_err(), "text format wrote JSON: {line}");
            }
        }
    }
}

/// A port in use is a start-up error naming the address, before the mirror
/// starts (it used to log "mirror started" and then fail).
#[test]
fn a_port_in_use_stops_the_program_before_the_mirror_starts() {
    let fx = Fixture::one_of_each();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bind = taken.local_addr().expect("addr").to_string();
    let db = fx.path.display().to_string();
    let out = Binary::command(&[("ORCH_BIND", &bind), ("ORCH_DB_PATH", &db)]).output().expect("run orchmirror");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot listen on") && stderr.contains(&bind), "{stderr}");
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
    assert!(!stderr.contains("mirror started"), "the mirror must not start: {stderr}");
}

/// `ORCH_BIND=:PORT` (the Go exporters' habit) listens on every interface,
/// with a warning that the state is then served without authentication.
#[test]
fn a_bare_port_listens_everywhere_with_a_warning() {
    let fx = Fixture::one_of_each();
    let port = support::free_port();
    let db = fx.path.display().to_string();
    let bind = format!(":{port}");
    let child = Binary::command(&[("ORCH_DB_PATH", &db), ("ORCH_BIND", &bind)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn orchmirror");
    let mut bin = Binary { child, base: format!("http://127.0.0.1:{port}"), port };
    support::wait_for(Duration::from_secs(20), "listening on every interface", || {
        support::client().get(bin.url("/livez")).send().ok().filter(|r| r.status().as_u16() == 200)
    });
    let _ = bin.terminate(Duration::from_secs(5));
    let stderr = bin.stderr();
    // Issue 34: one line with the URL to open and what protects it; the warning says there is no authentication.
    assert!(
        stderr.contains(&format!("serving: open http://127.0.0.1:{port}/ (and every other interface)")),
        "{stderr}"
    );
    assert!(stderr.contains("protection=Host check, no authentication"), "{stderr}");
    assert!(stderr.contains("beyond loopback with no authentication"), "{stderr}");
}

/// Issue 24, item 6: an IPv4-mapped loopback address is loopback, not "beyond
/// loopback". Skipped (saying so) where the machine has no IPv6 to bind it on.
#[test]
fn a_mapped_loopback_address_is_not_warned_about() {
    if std::net::TcpListener::bind("[::ffff:127.0.0.1]:0").is_err() {
        eprintln!("skipped: this machine cannot bind [::ffff:127.0.0.1] (no IPv6)");
        return;
    }
    let fx = Fixture::one_of_each();
    let port = support::free_port();
    let bind = format!("[::ffff:127.0.0.1]:{port}");
    let child = Binary::command(&[("ORCH_DB_PATH", &fx.path.display().to_string()), ("ORCH_BIND", &bind)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn orchmirror");
    let mut bin = Binary { child, base: format!("http://127.0.0.1:{port}"), port };
    support::wait_for(Duration::from_secs(20), "listening on the mapped address", || {
        support::client().get(bin.url("/livez")).send().ok().filter(|r| r.status().as_u16() == 200)
    });
    let _ = bin.terminate(Duration::from_secs(5));
    let stderr = bin.stderr();
    assert!(stderr.contains(&format!("serving: open http://127.0.0.1:{port}/")), "{stderr}");
    assert!(!stderr.contains("beyond loopback"), "{stderr}");
}

/// The binary's start-up line (`ORCH_LOG_FORMAT=json`): version and effective settings.
fn start_line(cmd: &mut std::process::Command) -> serde_json::Value {
    use std::io::BufRead;
    let mut child =
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut found = None;
    for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["message"] == "orchmirror starting"
        {
            found = Some(v);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    found.expect("a start-up line")
}

/// Layers, later wins: defaults, the TOML file, `.env`, the environment, flags.
#[test]
fn dot_env_sits_between_the_file_and_the_environment_and_flags_win() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("orch.toml"), "refresh_ms = 111\nmax_stale_ms = 1111\nsnapshot_timeout_ms = 11\n")
        .expect("toml");
    let port = support::free_port();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "# the orchestrator's settings\nORCH_CONFIG_FILE=orch.toml\nORCH_DB_PATH={}\nORCH_REFRESH_MS=222\n\
             ORCH_MAX_STALE_MS=2222\nORCH_BIND=127.0.0.1:{port}\nORCH_LOG_FORMAT=json\n",
            fx.path.display()
        ),
    )
    .expect(".env");
    let mut cmd = Binary::command(&[("ORCH_MAX_STALE_MS", "3333")]);
    cmd.current_dir(dir.path()).args(["--snapshot-timeout-ms", "44"]);
    let line = start_line(&mut cmd);
    assert_eq!(line["db"], fx.path.display().to_string(), "ORCH_DB_PATH from .env: {line}");
    assert_eq!(line["refresh_ms"], "stages=222,queue=222,agents=222,cost=222", ".env over the file: {line}");
    assert_eq!(line["max_stale_ms"], 3333, "the environment over .env: {line}");
    assert_eq!(line["snapshot_timeout_ms"], 44, "a flag over the file: {line}");
    assert_eq!(line["bind"], format!("127.0.0.1:{port}"));
    assert_eq!(line["version"], env!("CARGO_PKG_VERSION"));
    // Issue 34: the start-up line says which settings files were read.
    let files = line["settings_files"].as_str().unwrap_or_default();
    assert!(files.starts_with(".env (") && files.ends_with("settings), orch.toml"), "{line}");

    // --env-file names another file; the default ./.env is then not read.
    let other = dir.path().join("other.env");
    std::fs::write(&other, format!("ORCH_DB_PATH={}\nORCH_REFRESH_MS=555\nORCH_LOG_FORMAT=json\n", fx.path.display()))
        .expect("other.env");
    let mut cmd = Binary::command(&[("ORCH_BIND", &format!("127.0.0.1:{}", support::free_port()))]);
    cmd.current_dir(dir.path()).args(["--env-file", "other.env"]);
    let line = start_line(&mut cmd);
    assert_eq!(line["refresh_ms"], "stages=555,queue=555,agents=555,cost=555", "{line}");
    assert_eq!(line["max_stale_ms"], 30000, "nothing from ./.env or orch.toml: {line}");
    assert_eq!(line["settings_files"], "other.env (3 settings)", "{line}");
}

#[test]
fn a_missing_or_broken_env_file_is_a_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Binary::command(&[]).current_dir(dir.path()).args(["--env-file", "nope.env"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nope.env"), "{stderr}");

    std::fs::write(dir.path().join(".env"), "ORCH_REFRESH_MS='unterminated\n").expect(".env");
    let out = Binary::command(&[]).current_dir(dir.path()).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(".env"), "{stderr}");

    // A bad value from .env is named like any other, with the file it came from.
    std::fs::write(dir.path().join(".env"), "ORCH_REFRESH_MS=5\n").expect(".env");
    let out = Binary::command(&[]).current_dir(dir.path()).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ORCH_REFRESH_MS") && stderr.contains("\"5\""), "{stderr}");
    assert!(stderr.contains(".env)") && !stderr.contains("from the environment"), "names the file: {stderr}");
    // The same variable in the real environment wins, and is named as such.
    let out = Binary::command(&[("ORCH_REFRESH_MS", "6")]).current_dir(dir.path()).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("(from the environment)"));

    // One byte that is not UTF-8: the error gives its line.
    std::fs::write(dir.path().join(".env"), b"ORCH_REFRESH_MS=100\n# caf\xe9\n").expect(".env");
    let out = Binary::command(&[]).current_dir(dir.path()).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(".env: line 2 is not valid UTF-8"), "{stderr}");
}

/// Issue 24, item 4: a settings file is read only when it is a regular file
/// of at most 1 MiB. `/dev/zero` used to grow without bound and a FIFO to
/// hang start-up without a word; each is now a start-up error naming it.
#[test]
fn settings_files_that_are_not_regular_files_or_too_large_are_start_up_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.env");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let big = dir.path().join("big.env");
    std::fs::write(&big, format!("# {}\n", "x".repeat(2 * 1024 * 1024))).expect("write");
    let fifo_s = fifo.display().to_string();
    let big_s = big.display().to_string();
    // (flags, variables, the name the error gives, why)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: [Case; 5] = [
        (vec!["--env-file", "/dev/zero"], vec![], "/dev/zero", "not a regular file"),
        (vec!["--env-file", &fifo_s], vec![], "fifo.env", "not a regular file"),
        (vec!["--env-file", &big_s], vec![], "big.env", "larger than"),
        (vec![], vec![("ORCH_CONFIG_FILE", "/dev/zero")], "/dev/zero", "not a regular file"),
        (vec![], vec![("ORCH_CONFIG_FILE", &fifo_s)], "fifo.env", "not a regular file"),
    ];
    for (args, env, name, why) in cases {
        let mut child = Binary::command(&env)
            .current_dir(dir.path())
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        let status = support::wait_for_or_none(Duration::from_secs(10), || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{args:?} {env:?}: exits at once with 2: {stderr}");
        assert!(stderr.contains(name) && stderr.contains(why), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn a_bad_flag_value_names_the_flag() {
    let out = Binary::command(&[]).args(["--refresh-ms", "5"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--refresh-ms") && stderr.contains("\"5\"") && stderr.contains("command line"), "{stderr}");
}

#[test]
fn help_lists_every_setting_with_its_variable_and_version_names_the_build() {
    let out = Binary::command(&[]).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "ORCH_DB_PATH",
        "ORCH_BIND",
        "ORCH_METRICS_ENABLED",
        "ORCH_REFRESH_MS",
        "ORCH_STAGES_REFRESH_MS",
        "ORCH_QUEUE_REFRESH_MS",
        "ORCH_AGENTS_REFRESH_MS",
        "ORCH_COST_REFRESH_MS",
        "ORCH_SNAPSHOT_TIMEOUT_MS",
        "ORCH_MAX_STALE_MS",
        "ORCH_PID_START_TOLERANCE_S",
        "ORCH_RECONCILE_MS",
        "ORCH_LOG_FORMAT",
        "ORCH_UI_ENABLED",
        "ORCH_MAX_STREAMS",
        "ORCH_STREAM_HEARTBEAT_MS",
        "ORCH_COALESCE_MS",
        "ORCH_CPU_BUDGET_PERCENT",
        "ORCH_ALLOWED_HOSTS",
        "ORCH_SOCKET_MODE",
        "ORCH_SOCKET_GROUP",
        "ORCH_WEB_CONFIG_FILE",
        "ORCH_CONFIG_FILE",
    ] {
        assert!(help.contains(&format!("[env: {var}=")), "--help lacks {var}:\n{help}");
    }
    assert!(help.contains("[default: 127.0.0.1:8787]") && help.contains("[default: 15000]"), "{help}");
    let generate = Binary::command(&[]).args(["generate", "--help"]).output().expect("run");
    let generate = String::from_utf8_lossy(&generate.stdout);
    assert!(!generate.contains("--bind") && !generate.contains("--refresh-ms"), "{generate}");
    let version = Binary::command(&[]).arg("--version").output().expect("run");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.starts_with(&format!("orchmirror {} (", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains("rustc "), "{version}");
}

/// `.env.example` and README's settings table say what the settings table
/// says: every setting is in both with its default (unset ones commented out
/// in `.env.example`) and its range, and neither names a variable that is
/// not a setting.
#[test]
fn env_example_and_readme_agree_with_the_settings_table() {
    use orchmirror::config::table::{SETTINGS, section_period_var};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join(".env.example")).expect(".env.example");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `ORCH_")).collect();
    for s in SETTINGS {
        let var = s.var();
        let row = rows.iter().find(|r| r.starts_with(&format!("| `{var}` |"))).unwrap_or_else(|| {
            panic!("README's settings table has no row for {var}");
        });
        let cells: Vec<&str> = row.split(" | ").collect();
        let default = s.default_text().map_or(s.unset().to_owned(), |d| format!("`{d}`"));
        assert_eq!(cells.get(1).copied(), Some(default.as_str()), "README's default of {var}");
        if let Some(range) = s.range() {
            assert!(row.contains(&range.replace(" .. ", " … ")), "README's row of {var} lacks its range {range}");
        }
        let lines: Vec<&str> = example.lines().collect();
        let at = match s.default_text() {
            Some(d) => lines.iter().position(|l| *l == format!("{var}={d}")),
            None => lines.iter().position(|l| l.starts_with(&format!("# {var}="))),
        };
        let at = at.unwrap_or_else(|| panic!(".env.example lacks {var} with its default {:?}", s.default_text()));
        let comment: String =
            lines[..at].iter().rev().take_while(|l| l.starts_with("# ") && !l.contains('=')).cloned().collect();
        if let Some(range) = s.range() {
            assert!(comment.contains(&range), ".env.example's comment on {var} lacks its range {range}");
        }
    }
    let known = |var: &str| {
        var == "ORCH_CONFIG_FILE"
            || SETTINGS.iter().any(|s| s.var() == var)
            || orchmirror::SectionName::BUILT_IN.iter().any(|n| section_period_var(n.as_str()) == var)
    };
    let named = rows
        .iter()
        .flat_map(|r| r.split(" | ").next().unwrap_or("").split('`'))
        .chain(example.lines().filter_map(|l| l.trim_start_matches("# ").split('=').next().filter(|_| l.contains('='))))
        .filter(|v| v.starts_with("ORCH_") && !v.contains('<'))
        .collect::<Vec<_>>();
    assert!(named.len() > SETTINGS.len(), "{named:?}");
    for var in named {
        assert!(known(var), "{var} is documented but is not a setting");
    }
}
