//! `ORCH_WEB_CONFIG_FILE` (README, "Running beyond loopback: who may read"): the
//! exporter-toolkit's web configuration file. Basic-auth users on every route
//! (`/livez` only when the file says so), its response headers, failures
//! counted and logged once per client and minute without the password, a
//! changed file picked up without a restart (an invalid one keeps the last
//! good), and what is not supported a start-up error naming the key. TLS
//! itself: tests/integration/tls.rs.

use crate::support;

use std::path::Path;
use std::time::Duration;

use reqwest::blocking::RequestBuilder;
use support::{Binary, Fixture, Serves, wait_for};

fn write_config(path: &Path, users: &[(&str, &str)], extra: &str) {
    let mut text = String::from("basic_auth_users:\n");
    for (user, password) in users {
        // Cost 4: the lowest bcrypt allows, so the test spends no seconds hashing.
        let hash = bcrypt::hash(password, 4).expect("hash");
        text.push_str(&format!("  {user}: {hash}\n"));
    }
    text.push_str(extra);
    std::fs::write(path, text).expect("write the web configuration");
}

fn status(req: RequestBuilder) -> u16 {
    req.send().expect("send").status().as_u16()
}

fn exposition_value(bin: &Binary, family: &str) -> Option<f64> {
    let text = support::client()
        .get(bin.url("/metrics/prometheus"))
        .basic_auth("alice", Some("s3cret"))
        .send()
        .and_then(|r| r.text())
        .ok()?;
    text.lines().find_map(|l| l.strip_prefix(family)?.trim().parse().ok())
}

#[test]
fn users_are_required_on_every_route_and_headers_added() {
    let fx = Fixture::one_of_each();
    let config = fx.dir.path().join("web.yml");
    write_config(&config, &[("alice", "s3cret")], "http_server_config:\n  headers:\n    X-Frame-Options: deny\n");
    let mut bin = fx.serve(&[("ORCH_WEB_CONFIG_FILE", &config.display().to_string())]);
    let c = support::client();
    for path in ["/metrics", "/health", "/readyz", "/metrics/prometheus", "/metrics/stream", "/", "/nope"] {
        let resp = c.get(bin.url(path)).send().expect("send");
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(challenge.starts_with("Basic realm="), "{path}: {challenge}");
        assert_eq!(resp.headers().get("x-frame-options").map(|v| v.as_bytes()), Some(&b"deny"[..]), "{path}");
        let body: serde_json::Value = resp.json().expect("a JSON body");
        assert_eq!(body["error"], "authentication required", "{path}");
    }
    let wrong = c.get(bin.url("/metrics")).basic_auth("alice", Some("guess")).send().expect("send");
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(wrong.json::<serde_json::Value>().expect("json")["error"], "wrong user or password");
    assert_eq!(status(c.get(bin.url("/metrics")).basic_auth("mallory", Some("s3cret"))), 401, "an unknown user");
    assert_eq!(status(c.get(bin.url("/metrics")).header("Authorization", "Basic !!!")), 401, "garbage");

    let ok = c.get(bin.url("/metrics")).basic_auth("alice", Some("s3cret")).send().expect("send");
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.headers().get("x-frame-options").map(|v| v.as_bytes()), Some(&b"deny"[..]));
    let m: serde_json::Value = ok.json().expect("json");
    assert_eq!(m["schema_version"], 1);
    // A liveness probe cannot authenticate: /livez is open unless the file says otherwise.
    assert_eq!(status(c.get(bin.url("/livez"))), 200);

    let failures = exposition_value(&bin, "orchmirror_http_auth_failures_total").unwrap_or(0.0);
    assert!(failures >= 10.0, "counted: {failures}");
    assert!(bin.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let log = bin.stderr();
    let logged = log.lines().filter(|l| l.contains("authentication failed")).count();
    assert_eq!(logged, 1, "once per client and minute:\n{log}");
    assert!(!log.contains("guess") && !log.contains("s3cret"), "never the password:\n{log}");
}

#[test]
fn a_changed_file_is_picked_up_and_an_invalid_one_keeps_the_last_good() {
    let fx = Fixture::one_of_each();
    let config = fx.dir.path().join("web.yml");
    write_config(&config, &[("alice", "s3cret")], "authenticate_livez: true\n");
    let bin = fx.serve(&[("ORCH_WEB_CONFIG_FILE", &config.display().to_string())]);
    let c = support::client();
    assert_eq!(status(c.get(bin.url("/livez"))), 401, "the file asks /livez to authenticate too");
    assert_eq!(status(c.get(bin.url("/livez")).basic_auth("alice", Some("s3cret"))), 200);

    // A stream opened as alice...
    let alice = {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:s3cret"))
    };
    let mut stream = support::sse::Stream::open_with(bin.port, None, false, None, &[("Authorization", &alice)]);
    assert_eq!(stream.status, 200);
    assert_eq!(stream.next(Duration::from_secs(10)).map(|e| e.event).as_deref(), Some("envelope"));

    // Rotation: bob replaces alice, no restart.
    write_config(&config, &[("bob", "n3w")], "");
    wait_for(Duration::from_secs(10), "bob to be accepted", || {
        (status(c.get(bin.url("/metrics")).basic_auth("bob", Some("n3w"))) == 200).then_some(())
    });
    assert_eq!(status(c.get(bin.url("/metrics")).basic_auth("alice", Some("s3cret"))), 401, "alice is gone");
    assert_eq!(status(c.get(bin.url("/livez"))), 200, "the new file does not ask it");
    // ...is not dropped by the rotation: it gets the next change.
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');");
    let ev = stream.next(Duration::from_secs(10)).expect("the open stream goes on");
    assert_eq!(ev.event, "section");

    // A broken file: the last good one stays, and the metric says so.
    std::fs::write(&config, "basic_auth_users: [this is not a map\n").expect("break it");
    wait_for(Duration::from_secs(10), "the failed reload to be counted", || {
        let text = support::client()
            .get(bin.url("/metrics/prometheus"))
            .basic_auth("bob", Some("n3w"))
            .send()
            .and_then(|r| r.text())
            .ok()?;
        text.contains("orchmirror_web_config_last_reload_successful 0").then_some(())
    });
    assert_eq!(status(c.get(bin.url("/metrics")).basic_auth("bob", Some("n3w"))), 200, "the last good file");
}

#[test]
fn what_this_server_does_not_support_is_a_start_up_error_naming_the_key() {
    let fx = Fixture::one_of_each();
    let db = fx.path.display().to_string();
    for (text, key) in [
        ("rate_limit:\n  interval: 1s\n  burst: 20\n", "rate_limit"),
        ("http_server_config:\n  http2: maybe\n", "http2"),
        ("basic_auth_users:\n  alice: plaintext\n", "bcrypt"),
        ("basic_auth_user:\n  alice: x\n", "basic_auth_user"),
    ] {
        let config = fx.dir.path().join("bad.yml");
        std::fs::write(&config, text).expect("write");
        let out = Binary::command(&[("ORCH_DB_PATH", &db), ("ORCH_WEB_CONFIG_FILE", &config.display().to_string())])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("ORCH_WEB_CONFIG_FILE") && err.contains(key), "{text}: {err}");
        // Issue 34: said as every configuration error is, before any start-up line.
        assert!(err.starts_with("orchmirror: configuration error: invalid ORCH_WEB_CONFIG_FILE="), "{text}: {err}");
        assert!(!err.contains("starting"), "{text}: {err}");
    }
}

/// Issue 34: with basic auth configured, the start-up line says so (and how
/// many users) and no warning says there is no authentication, even on
/// every interface.
#[test]
fn the_start_up_line_names_basic_auth_and_no_warning_says_otherwise() {
    let fx = Fixture::one_of_each();
    let config = fx.dir.path().join("web.yml");
    write_config(&config, &[("alice", "s3cret"), ("bob", "hunter2")], "");
    let port = support::free_port();
    let bind = format!(":{port}");
    let child = Binary::command(&[
        ("ORCH_DB_PATH", &fx.path.display().to_string()),
        ("ORCH_BIND", &bind),
        ("ORCH_WEB_CONFIG_FILE", &config.display().to_string()),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn orchmirror");
    let mut bin = Binary { child, base: format!("http://127.0.0.1:{port}"), port };
    wait_for(Duration::from_secs(20), "the server", || {
        support::client().get(bin.url("/livez")).send().ok().filter(|r| r.status().as_u16() == 200)
    });
    assert!(bin.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let log = bin.stderr();
    assert!(log.contains(&format!("serving: open http://127.0.0.1:{port}/")), "{log}");
    assert!(log.contains("protection=basic auth (2 users), Host check"), "{log}");
    assert!(!log.contains("no authentication"), "{log}");
}
