//! The HTTP surface: routes, JSON errors, query strings, the kill switch.

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{Binary, Fixture, Serves};

#[test]
fn unknown_paths_and_wrong_methods_get_json_errors() {
    let fx = Fixture::new();
    let db = fx.path.display().to_string();
    let bin = Binary::start(&[("ORCH_DB_PATH", &db)]);
    let c = support::client();
    // `/` is the live page (tests/integration/ui.rs), unless ORCH_UI_ENABLED is false.
    for path in ["/nope", "/metrics/extra", "/healthz", "/index.html"] {
        let r = c.get(bin.url(path)).send().expect("get");
        assert_eq!(r.status().as_u16(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = r.json().expect("json");
        assert!(body["error"].as_str().is_some_and(|e| e.contains(path)), "{path}: {body}");
    }
    for path in ["/metrics", "/health", "/metrics/stream", "/"] {
        for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::PATCH] {
            let r = c.request(method.clone(), bin.url(path)).body("x").send().expect("send");
            assert_eq!(r.status().as_u16(), 405, "{method} {path}");
            assert_eq!(r.headers()["content-type"], "application/json");
            assert!(r.headers().get("allow").is_some());
            let body: Value = r.json().expect("json");
            assert!(body["error"].is_string(), "{body}");
        }
    }
    let head = c.head(bin.url("/metrics")).send().expect("head");
    assert_eq!(head.status().as_u16(), 200);
}

/// One raw HTTP/1.1 request for `path` with one extra header line: the status and the body.
fn with_host_and(port: u16, path: &str, header: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{header}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// One raw HTTP request with one more header line: the answer's head only
/// (its body may be compressed).
fn head_with(port: u16, path: &str, header: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{header}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).expect("send");
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// One raw HTTP request with `host` as its `Host` header (none when `None`,
/// as HTTP/1.0): the status and the body.
fn with_host(port: u16, path: &str, host: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let request = match host {
        Some(h) => format!("GET {path} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"),
        None => format!("GET {path} HTTP/1.0\r\n\r\n"),
    };
    s.write_all(request.as_bytes()).expect("send");
    let mut buf = Vec::new();
    // A stream never ends by itself: its head and first bytes are enough.
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if path.contains("stream") && buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn a_request_for_a_foreign_host_name_is_refused_on_every_route() {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let port = bin.port;
    for path in ["/metrics", "/metrics/stream", "/metrics/prometheus", "/health", "/readyz", "/livez", "/", "/nope"] {
        let (status, body) = with_host(port, path, Some(&format!("evil.example:{port}")));
        assert_eq!(status, 421, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        let e = body["error"].as_str().unwrap_or_default();
        assert!(e.contains("evil.example") && e.contains("ORCH_ALLOWED_HOSTS"), "{path}: {e}");
    }
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), "LocalHost".into(), "[::1]".into()] {
        assert_eq!(with_host(port, "/metrics", Some(&host)).0, 200, "{host}");
    }
    assert_eq!(with_host(port, "/metrics", None).0, 200, "HTTP/1.0 without Host");
    if let Some(own) = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()) {
        assert_eq!(with_host(port, "/metrics", Some(&format!("{own}:{port}"))).0, 200, "this machine's name {own}");
    }

    // Malformed hosts are refused, not taken as absent or as the name they end in (issue 33, item 7).
    for host in ["évil.example", "[::1]evil.com", "evil.com#.localhost", "evil.com/.localhost", "localhost:80x"] {
        assert_eq!(with_host(port, "/metrics", Some(host)).0, 421, "{host}");
    }
    // An absolute-form request is judged by the host in its target, not its Host header.
    assert_eq!(with_host(port, "http://evil.example/metrics", Some("localhost")).0, 421, "absolute form, foreign");
    assert_eq!(with_host(port, &format!("http://localhost:{port}/metrics"), Some("evil.example")).0, 200);

    let listed = fx.serve(&[("ORCH_ALLOWED_HOSTS", "metrics.example.org, Evil.Example")]);
    listed.wait_all_ok();
    for host in ["evil.example", "metrics.example.org:443"] {
        assert_eq!(with_host(listed.port, "/metrics", Some(host)).0, 200, "{host} is listed");
    }
    assert_eq!(with_host(listed.port, "/metrics", Some("other.example")).0, 421);
}

#[test]
fn unknown_query_strings_are_ignored() {
    let fx = Fixture::new();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    for q in ["?format=prom", "?a=1&b=2", "?%ZZ", "?=&&=", "?x=%00"] {
        let m = support::get_json(&bin.url(&format!("/metrics{q}")));
        assert_eq!(m["schema_version"], 1, "{q}");
        assert!(m["sections"]["queue"]["status"].is_string(), "{q}");
    }
}

#[test]
fn health_reports_ok_when_every_section_is_ok() {
    let fx = Fixture::new();
    let bin = fx.serve(&[]);
    let h = support::wait_for(Duration::from_secs(10), "health ok", || {
        let h = support::get_json(&bin.url("/health"));
        (h["status"] == "ok").then_some(h)
    });
    for s in support::SECTIONS {
        assert_eq!(h["sections"][s]["status"], "ok");
        assert!(h["sections"][s]["refreshed_at"].is_string());
    }
}

/// Whether process `pid` holds any file descriptor on `db` (or its -wal/-shm/-journal).
fn holds_fd_on(pid: u32, db: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let prefix = db.display().to_string();
    fds.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|target| target.display().to_string().starts_with(&prefix))
}

#[test]
fn the_kill_switch_serves_the_fixed_body_and_never_opens_the_database() {
    let fx = Fixture::new();
    let db = fx.path.display().to_string();
    for off in ["false", "0", "no", "OFF"] {
        let bin = Binary::start(&[("ORCH_DB_PATH", &db), ("ORCH_METRICS_ENABLED", off), ("ORCH_REFRESH_MS", "10")]);
        for path in ["/metrics", "/metrics?x=1"] {
            let (status, ct, body) = support::get(&bin.url(path));
            assert_eq!((status, ct.as_str()), (200, "application/json"));
            assert_eq!(body, r#"{"schema_version":1,"enabled":false}"#, "{off}");
        }
        // README: exactly this, keys in this order.
        for path in ["/health", "/readyz"] {
            let (status, _, body) = support::get(&bin.url(path));
            assert_eq!((status, body.as_str()), (200, r#"{"status":"ok","enabled":false,"sections":{}}"#), "{path}");
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(!holds_fd_on(bin.child.id(), &fx.path), "{off}: the database was opened");
    }
    // Control: with the switch on, the same check does see the database open.
    let on = Binary::start(&[("ORCH_DB_PATH", &db), ("ORCH_REFRESH_MS", "50")]);
    on.wait_all_ok();
    assert!(holds_fd_on(on.child.id(), &fx.path), "control: an enabled mirror holds the database open");
}

#[test]
fn the_mirror_never_writes_the_database() {
    let fx = Fixture::new();
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('a', 'queued');");
    let before = std::fs::read(&fx.path).expect("read db");
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "20")]);
    bin.wait_all_ok();
    std::thread::sleep(Duration::from_millis(300));
    drop(bin);
    assert_eq!(std::fs::read(&fx.path).expect("read db"), before, "the file changed");
    let names: Vec<String> = std::fs::read_dir(fx.dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["orch.sqlite".to_owned()], "no journal or WAL files were created");
}

/// Splits what the server wrote on one connection into responses, framed as
/// a client must frame them: a HEAD answer has no body whatever its
/// `content-length`, any other has exactly `content-length` bytes. Returns
/// (status, body) per response, and panics on anything left over.
fn frame(mut bytes: &[u8], methods: &[&str]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for method in methods {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head for the {method} answer; left: {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body_len = if *method == "HEAD" { 0 } else { len };
        bytes = &bytes[end + 4..];
        assert!(bytes.len() >= body_len, "the {method} answer's body is cut short ({head})");
        out.push((status, String::from_utf8_lossy(&bytes[..body_len]).to_string()));
        bytes = &bytes[body_len..];
    }
    assert!(bytes.is_empty(), "bytes after the last answer: {:?}", String::from_utf8_lossy(bytes));
    out
}

/// HEAD never carries a body, pipelined or not, on every route; and the GET
/// pipelined with it keeps its own (actix-http 3.20 encoded each answer with
/// the flags of the latest request read; see vendor/actix-http).
#[test]
fn pipelined_head_and_get_are_framed_right_on_every_route() {
    use std::io::{Read, Write};
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let routes = ["/metrics", "/health", "/metrics/prometheus", "/nope"];
    for first in routes {
        for second in routes {
            for methods in [["HEAD", "GET"], ["GET", "HEAD"], ["HEAD", "HEAD"]] {
                for _ in 0..5 {
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", bin.port)).expect("connect");
                    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                    let req = format!(
                        "{} {first} HTTP/1.1\r\nHost: localhost\r\n\r\n{} {second} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                        methods[0], methods[1]
                    );
                    s.write_all(req.as_bytes()).expect("write");
                    let mut bytes = Vec::new();
                    s.read_to_end(&mut bytes).expect("read");
                    let answers = frame(&bytes, &methods);
                    for ((status, body), (method, path)) in answers.iter().zip(methods.iter().zip([first, second])) {
                        let want = if path == "/nope" { 404 } else { 200 };
                        assert_eq!(*status, want, "{method} {path} after {req:?}");
                        if *method == "GET" && path != "/metrics/prometheus" {
                            assert!(
                                serde_json::from_str::<Value>(body).is_ok(),
                                "{method} {path}: the body is whole JSON: {body:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// README, "Routes": a weak `ETag` from the sections' sequence numbers and
/// statuses (not the ages), `304` with no body for a matching
/// `If-None-Match`, a new tag once the data changes.
#[test]
fn etag_and_if_none_match() {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "100")]);
    bin.wait_all_ok();
    let client = support::client();
    let get = |tag: Option<&str>| {
        let mut req = client.get(bin.url("/metrics"));
        if let Some(tag) = tag {
            req = req.header("If-None-Match", tag);
        }
        let resp = req.send().expect("GET /metrics");
        let status = resp.status().as_u16();
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        (status, etag, resp.text().expect("body"))
    };
    let (status, tag, _) = get(None);
    assert_eq!(status, 200);
    assert!(tag.starts_with("W/\"") && tag.ends_with('"'), "a weak tag: {tag:?}");
    // Issue 24, item 6: the answer varies with Accept and Accept-Encoding,
    // compressed or not, and JSON is never sniffed as something else.
    for accept_encoding in ["identity", "gzip"] {
        let resp = client.get(bin.url("/metrics")).header("Accept-Encoding", accept_encoding).send().expect("get");
        let vary: Vec<String> = resp
            .headers()
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|p| p.trim().to_ascii_lowercase()).collect::<Vec<_>>())
            .collect();
        assert!(vary.iter().any(|v| v == "accept") && vary.iter().any(|v| v == "accept-encoding"), "{vary:?}");
    }
    // Issue 24, item 6: refusing every encoding gets the JSON error shape.
    for refuse in ["identity;q=0", "*;q=0"] {
        let (status, body) = with_host_and(bin.port, "/metrics", &format!("Accept-Encoding: {refuse}"));
        assert_eq!(status, 406, "{refuse}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{refuse}: not JSON ({e}): {body}"));
        assert!(body["error"].as_str().is_some_and(|e| e.contains("Accept-Encoding")), "{body}");
    }
    // Issue 35: a q-value above 1 is invalid, and an invalid member is ignored
    // (as if absent), never taken at face value.
    for (accept_encoding, expected) in
        [("gzip;q=1.5", None), ("gzip;q=1.5, br", Some("br")), ("gzip;q=1.0", Some("gzip")), ("gzip;q=1.001", None)]
    {
        let head = head_with(bin.port, "/metrics", &format!("Accept-Encoding: {accept_encoding}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{accept_encoding}: {head}");
        let encoding = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-encoding:").map(|v| v.trim().to_owned()));
        assert_eq!(encoding.as_deref(), expected, "{accept_encoding}: {head}");
    }
    // q-values choose the format: OpenMetrics refused with q=0 gives the 0.0.4 text.
    let refused = client
        .get(bin.url("/metrics"))
        .header("Accept", "application/openmetrics-text;q=0, text/plain")
        .send()
        .expect("get");
    let ct = refused.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    // The page's script runs by its hash, not by 'unsafe-inline'.
    let csp = client.get(bin.url("/")).send().expect("page");
    let csp = csp.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(csp.contains("script-src 'sha256-") && !csp.contains("script-src 'unsafe-inline'"), "{csp}");
    for path in ["/metrics", "/health", "/nope", "/", "/livez", "/metrics/prometheus"] {
        let resp = client.get(bin.url(path)).send().expect("get");
        assert_eq!(resp.headers().get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]), "{path}");
        assert_eq!(resp.headers().get("referrer-policy").map(|v| v.as_bytes()), Some(&b"no-referrer"[..]), "{path}");
    }
    // Ages move with the clock, the tag does not.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, again, _) = get(None);
    assert_eq!(again, tag, "nothing changed, the same tag");
    let (status, tag304, body) = get(Some(&tag));
    assert_eq!((status, body.as_str()), (304, ""), "a matching If-None-Match gets 304 and no body");
    assert_eq!(tag304, tag);
    let (status, _, body) = get(Some("W/\"something-else\""));
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&body).is_ok());
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');");
    let changed = support::wait_for(Duration::from_secs(10), "a new tag", || {
        let (status, new, _) = get(Some(&tag));
        (status == 200 && new != tag).then_some(new)
    });
    assert!(changed.starts_with("W/\""));
}

/// Issue 24, item 2: a tag never matches across mirrors or restarts. Two
/// mirrors of two databases (and one mirror before and after a restart) have
/// the same sequence numbers and statuses; their tags still differ, and one's
/// tag gets a full answer from the other.
#[test]
fn etags_differ_across_instances_and_restarts() {
    let (a, b) = (Fixture::one_of_each(), Fixture::one_of_each());
    let tag_of = |bin: &Binary, if_none_match: Option<&str>| {
        let mut req = support::client().get(bin.url("/metrics"));
        if let Some(t) = if_none_match {
            req = req.header("If-None-Match", t);
        }
        let resp = req.send().expect("GET /metrics");
        let tag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        (resp.status().as_u16(), tag)
    };
    let first = a.serve(&[]);
    let other = b.serve(&[]);
    first.wait_all_ok();
    other.wait_all_ok();
    let (_, tag_a) = tag_of(&first, None);
    let (_, tag_b) = tag_of(&other, None);
    assert_ne!(tag_a, tag_b, "two mirrors of two databases");
    assert_eq!(tag_of(&other, Some(&tag_a)).0, 200, "one mirror's tag is not another's");
    drop(first);
    let restarted = a.serve(&[]);
    restarted.wait_all_ok();
    let (status, tag_again) = tag_of(&restarted, Some(&tag_a));
    assert_eq!(status, 200, "a tag from before the restart gets the body");
    assert_ne!(tag_again, tag_a);
}

/// README, "Routes": probes. `/livez` is 200 while the process serves;
/// `/readyz` is 200 with `/health`'s JSON when every section has data, 503
/// when one has none.
#[test]
fn readyz_and_livez() {
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "100"), ("ORCH_MAX_STALE_MS", "0")]);
    bin.wait_all_ok();
    let (status, ct, body) = support::get(&bin.url("/livez"));
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let (status, _, body) = support::get(&bin.url("/readyz"));
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(h["sections"]["queue"]["status"], "ok");
    // A section with no data (its table gone, nothing stale kept): not ready.
    fx.exec("DROP TABLE tasks;");
    let body = support::wait_for(Duration::from_secs(10), "503", || {
        let (status, _, body) = support::get(&bin.url("/readyz"));
        (status == 503).then_some(body)
    });
    let h: Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(h["sections"]["stages"]["status"], "error", "{h}");
    let (status, _, _) = support::get(&bin.url("/livez"));
    assert_eq!(status, 200, "still alive");
}

/// README, "Routes": a compressed body when the client asks for one.
#[test]
fn gzip_when_asked() {
    use std::io::Read;
    let fx = Fixture::one_of_each();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    let resp =
        support::client().get(bin.url("/metrics")).header("Accept-Encoding", "gzip").send().expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let encoding = resp.headers().get("content-encoding").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(encoding, "gzip");
    let bytes = resp.bytes().expect("body");
    let mut json = String::new();
    flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut json).expect("gzip");
    let m: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(m["schema_version"], 1);
    // Without Accept-Encoding: plain.
    let plain = support::client().get(bin.url("/metrics")).send().expect("GET");
    assert!(plain.headers().get("content-encoding").is_none());
}
