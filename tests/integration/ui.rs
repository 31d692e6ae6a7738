//! The live page at `/` (issue 12) in a real browser: Debian's `chromium`
//! driven through `chromedriver` (WebDriver) with `fantoccini`, against the
//! real binary. `.ci/run` installs both; elsewhere, without them, these tests
//! say they are skipped (and under `CI=true` they fail instead).

use crate::support;

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;
use support::{Binary, Fixture, Serves, get, get_json};

/// One browser at a time: two cores, and each test is about time.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// Generous bound for what should happen within a refresh period or two.
const SOON: Duration = Duration::from_secs(15);

struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver on a free port, once it listens; `None` (skipped) without the tools.
fn driver() -> Option<Driver> {
    support::system_tool("chromium")?;
    let chromedriver = support::system_tool("chromedriver")?;
    let port = support::free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { child, port };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(driver)
}

/// Runs `f` with a headless Chromium session of the given window size.
fn with_browser<F>(width: u32, height: u32, f: F)
where
    F: AsyncFnOnce(&Client),
{
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let Some(driver) = driver() else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        let binary = support::system_tool("chromium").map(|p| p.display().to_string());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": binary,
                // The TLS test's certificate comes from a CA made at test time.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--ignore-certificate-errors", format!("--window-size={width},{height}")],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session");
        f(&client).await;
        let _ = client.close().await;
    });
    drop(driver);
}

/// A blocking call (the reqwest blocking client, which has a runtime of its
/// own) made from inside the test's runtime: on a thread of its own.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("blocking call"))
}

/// The text `css` shows ("" when nothing matches), read in one script: the
/// page re-renders every second, so a found element can be replaced before
/// a second WebDriver command reads it.
async fn text(c: &Client, css: &str) -> String {
    let js = "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : '';";
    match c.execute(js, vec![Value::String(css.to_owned())]).await {
        Ok(Value::String(t)) => t,
        _ => String::new(),
    }
}

/// Waits until the text of `css` satisfies `ok`; returns it.
async fn wait_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let t = text(c, css).await;
        if ok(&t) {
            return t;
        }
        assert!(start.elapsed() < SOON, "timed out waiting for {what}: {css} shows {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rows(c: &Client, tbody: &str) -> usize {
    c.find_all(Locator::Css(&format!("{tbody} tr"))).await.map(|v| v.len()).unwrap_or(0)
}

async fn script(c: &Client, js: &str) -> Value {
    c.execute(js, vec![]).await.unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Saves a screenshot under `target/` (an artifact of the test run).
async fn screenshot(c: &Client, name: &str) -> std::path::PathBuf {
    let png = c.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

fn busy_fixture() -> Fixture {
    let fx = Fixture::one_of_each();
    fx.exec(
        "INSERT INTO tasks (work_item_id, stage, repo) VALUES ('ORCH-2', 'implement', 'core'), ('ORCH-3', 'test', 'web');
         INSERT INTO jobs (agent, status, created_at) VALUES ('developer', 'queued', datetime('now', '-90 seconds')),
                                                             ('reviewer', 'queued', datetime('now')),
                                                             ('tester', 'done', datetime('now')),
                                                             ('tester', 'failed', datetime('now'));
         UPDATE jobs SET attempts = 2 WHERE id = 5;
         INSERT INTO jobs (id, agent, status, started_at) VALUES (100, 'writer', 'running', datetime('now'));
         INSERT INTO agent_runs (job_id, agent, pid) VALUES (100, 'writer', NULL);",
    );
    fx
}

#[test]
fn the_page_shows_what_metrics_serves_and_follows_changes() {
    let fx = busy_fixture();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    with_browser(1280, 1000, async |c| {
        c.goto(&bin.url("/")).await.expect("load /");
        wait_text(c, "#mode", "the stream", |t| t.starts_with("live")).await;
        let m = off_runtime(|| bin.metrics());
        let q = &m["queue"];
        let depth = q["depth"].to_string();
        wait_text(c, "#queue-depth", "the queue depth", |t| t == depth).await;
        for k in ["running", "done", "failed", "cancelled"] {
            assert_eq!(text(c, &format!("#queue-{k}")).await, q["counts"][k].to_string(), "{k}");
        }
        assert_eq!(text(c, "#queue-retries").await, "1 / 1 / 2");
        assert_eq!(rows(c, "#stages-body").await, m["stages"].as_array().map_or(0, Vec::len));
        assert_eq!(rows(c, "#agents-body").await, m["agents"].as_array().map_or(0, Vec::len));
        assert_eq!(text(c, "#cost-runs").await, m["cost"]["aggregate"]["runs"].to_string());
        let cost = m["cost"]["aggregate"]["cost_usd"].as_f64().unwrap_or_default();
        assert_eq!(text(c, "#cost-usd").await, usd(cost), "dollars and cents");
        let agents = text(c, "#agents-body").await;
        let without_pid = m["agents"].as_array().into_iter().flatten().filter(|a| a["pid"].is_null()).count();
        assert!(without_pid > 0, "the fixture has a run without a pid");
        assert!(agents.contains("no pid"), "a run without a pid says so, not \"gone\": {agents}");
        assert!(text(c, "footer").await.contains("/metrics/prometheus"), "links to the other routes");
        assert_eq!(text(c, "#status-queue").await, "ok");
        assert!(text(c, "#version").await.starts_with(env!("CARGO_PKG_VERSION")), "the page names its version");
        // All ok: one line with the ages, the table out of the way.
        let summary = text(c, "#summary").await;
        assert!(summary.starts_with("All 4 sections ok; ages stages "), "{summary}");
        let table = c.find(Locator::Css("#sections-table")).await.expect("sections table");
        assert!(!table.is_displayed().await.unwrap_or(true), "the sections table is hidden while all are ok");
        // The depth chart's axes: the largest depth at the top, a start time, now.
        wait_text(c, "#depth-max", "the chart's top", |t| t == depth).await;
        assert_eq!(text(c, "#depth-to").await, "now");
        assert!(!text(c, "#depth-from").await.is_empty(), "the chart's start time");
        // The spend rate, from the cost total's readings: nothing spent on a
        // quiet database, then a run's cost makes it positive.
        wait_text(c, "#cost-rate", "a spend rate", |t| t.starts_with("$0.00 an hour over the last")).await;
        fx.exec(
            "INSERT INTO agent_runs (job_id, agent, finished_at, cost_usd) VALUES (3, 'tester', datetime('now'), 5.0);",
        );
        wait_text(c, "#cost-rate", "a positive spend rate", |t| {
            t.ends_with(" s") && t.contains(" an hour") && !t.starts_with("$0.00")
        })
        .await;
        let work_items = text(c, "#stages-body").await;
        assert!(["ORCH-1", "ORCH-2", "ORCH-3"].iter().all(|w| work_items.contains(w)), "{work_items}");

        // A change appears without a reload.
        let before = q["depth"].as_u64().unwrap_or_default();
        fx.exec("INSERT INTO jobs (agent, status) VALUES ('developer', 'queued');");
        wait_text(c, "#queue-depth", "the new depth", |t| t == (before + 1).to_string()).await;
        assert_eq!(off_runtime(|| bin.metrics())["queue"]["depth"].as_u64(), Some(before + 1));
        screenshot(c, "page.png").await;

        // A section made to fail shows its status and reason; its data is marked as not current.
        // The DROP's own write lock can fail a refresh first ("database is
        // locked" on a rollback-journal file, also `stale`): wait for the
        // lasting reason, the missing table, not for the first stale.
        fx.exec("DROP TABLE tasks;");
        wait_text(c, "#error-stages", "the missing table as the reason", |t| t.contains("tasks")).await;
        assert_eq!(text(c, "#status-stages").await, "stale");
        let line = text(c, "#stages .state-line").await;
        assert!(line.contains("Stale"), "{line}");
        let summary = text(c, "#summary").await;
        assert!(summary.contains("stages stale"), "{summary}");
        let table = c.find(Locator::Css("#sections-table")).await.expect("sections table");
        assert!(table.is_displayed().await.unwrap_or(false), "a section not ok brings the table back");
    });
}

/// Tabs of one browser share one stream (a `SharedWorker`): a browser keeps
/// at most six HTTP/1.1 connections to one host, and each tab holding a
/// stream of its own left the seventh tab, and `/metrics` opened from the
/// page, waiting for a connection until a tab was closed (issue 34).
#[test]
fn eight_tabs_and_metrics_in_a_ninth_all_load_and_follow_changes() {
    let fx = busy_fixture();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    with_browser(1024, 768, async |c| eight_tabs_and_metrics(c, &bin.url(""), &fx, "http/1.1").await);
}

/// The same over HTTPS, where the browser speaks HTTP/2 (issue 34).
#[test]
fn over_https_eight_tabs_and_metrics_load_over_http2() {
    let fx = busy_fixture();
    let dir = fx.dir.path();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .and_then(|p| p.self_signed(&key))
        .expect("certificate");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("write");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write");
    let config = dir.join("web.yml");
    std::fs::write(&config, "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n").expect("write");
    let port = support::free_port();
    let mut child = Binary::command(&[
        ("ORCH_DB_PATH", &fx.path.display().to_string()),
        ("ORCH_BIND", &format!("127.0.0.1:{port}")),
        ("ORCH_WEB_CONFIG_FILE", &config.display().to_string()),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn");
    support::wait_for(SOON, "the TLS port", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    with_browser(1024, 768, async |c| eight_tabs_and_metrics(c, &format!("https://127.0.0.1:{port}"), &fx, "h2").await);
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Eight tabs of the page at `base` and `/metrics` in a ninth all load
/// (over `protocol`, as the browser reports it), every tab follows a
/// change, and the eight share one stream.
async fn eight_tabs_and_metrics(c: &Client, base: &str, fx: &Fixture, protocol: &str) {
    // A tab that cannot get a connection would wait for the page load
    // timeout (300 s by default); 20 s says it plainly.
    c.update_timeouts(fantoccini::wd::TimeoutConfiguration::new(None, Some(Duration::from_secs(20)), None))
        .await
        .expect("timeouts");
    let mut tabs = vec![c.window().await.expect("the first tab")];
    c.goto(&format!("{base}/")).await.expect("tab 1 loads");
    for n in 2..=8 {
        let tab = c.new_window(true).await.expect("a new tab").handle;
        c.switch_to_window(tab.clone()).await.expect("switch");
        c.goto(&format!("{base}/")).await.unwrap_or_else(|e| panic!("tab {n} loads: {e}"));
        tabs.push(tab);
    }
    let spoken = script(c, "return performance.getEntriesByType('navigation')[0].nextHopProtocol;").await;
    assert_eq!(spoken, Value::String(protocol.to_owned()), "the protocol the page was loaded over");
    let ninth = c.new_window(true).await.expect("a ninth tab").handle;
    c.switch_to_window(ninth.clone()).await.expect("switch");
    c.goto(&format!("{base}/metrics")).await.expect("/metrics loads beside eight tabs of the page");
    let body = text(c, "body").await;
    let envelope: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/metrics in the ninth tab: {e}: {body:.200}"));
    let depth = envelope["queue"]["depth"].as_u64().unwrap_or_default();
    for (n, tab) in tabs.iter().enumerate() {
        c.switch_to_window(tab.clone()).await.expect("switch");
        wait_text(c, "#mode", &format!("tab {} live", n + 1), |t| t.starts_with("live")).await;
        wait_text(c, "#queue-depth", "the depth", |t| t == depth.to_string()).await;
    }
    // A change reaches every tab, without a reload.
    fx.exec("INSERT INTO jobs (agent, status) VALUES ('developer', 'queued');");
    for (n, tab) in tabs.iter().enumerate() {
        c.switch_to_window(tab.clone()).await.expect("switch");
        wait_text(c, "#queue-depth", &format!("the new depth in tab {}", n + 1), |t| t == (depth + 1).to_string())
            .await;
    }
    // One stream serves them all.
    c.switch_to_window(ninth).await.expect("switch");
    c.goto(&format!("{base}/health")).await.expect("/health");
    let health: Value = serde_json::from_str(&text(c, "body").await).expect("/health as JSON");
    assert_eq!(health["streams"]["open"].as_u64(), Some(1), "eight tabs share one stream: {health}");
}

/// Dollars as the page writes them: `$1,234.50`; under a dollar to four places.
fn usd(x: f64) -> String {
    let places = if x.abs() < 1.0 && x != 0.0 { 4 } else { 2 };
    let fixed = format!("{:.*}", places, x.abs());
    let (whole, frac) = fixed.split_once('.').unwrap_or((&fixed, ""));
    let mut grouped = String::new();
    for (i, d) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(d);
    }
    // toLocaleString drops trailing zeros past the second place.
    let frac = if places == 4 { frac.trim_end_matches('0') } else { frac };
    let frac = if frac.len() < 2 { format!("{frac:0<2}") } else { frac.to_owned() };
    format!("${}{grouped}.{frac}", if x < 0.0 { "-" } else { "" })
}

#[test]
fn dollars_are_written_as_the_page_writes_them() {
    assert_eq!(usd(954_589.1), "$954,589.10");
    assert_eq!(usd(16.85262), "$16.85");
    assert_eq!(usd(0.004), "$0.004");
    assert_eq!(usd(0.0), "$0.00");
}

/// Seconds from the page's age text ("0 s", "3 s", "2 min 5 s").
fn seconds(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut parts = text.split_whitespace();
    while let (Some(n), Some(unit)) = (parts.next(), parts.next()) {
        let n: f64 = n.parse().ok()?;
        total += n * match unit {
            "s" => 1.0,
            "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
    }
    Some(total)
}

#[test]
fn on_a_quiet_database_the_page_shows_the_ages_metrics_serves() {
    let fx = busy_fixture();
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "1000")]);
    bin.wait_all_ok();
    with_browser(1280, 1000, async |c| {
        c.goto(&bin.url("/")).await.expect("load /");
        wait_text(c, "#mode", "the stream", |t| t.starts_with("live")).await;
        // Nothing is committed: no section changes, so no `section` event
        // comes. Before, the page counted every age up from the envelope.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let page = script(
            c,
            "return Object.fromEntries([...document.querySelectorAll('#sections-body tr')]\
               .map(r => [r.querySelector('th').textContent, r.querySelectorAll('td')[1].textContent]));",
        )
        .await;
        let m = off_runtime(|| bin.metrics());
        for s in support::SECTIONS {
            let shown = page[s].as_str().and_then(seconds);
            let served = m["sections"][s]["age_ms"].as_f64().map(|ms| ms / 1000.0);
            let (Some(shown), Some(served)) = (shown, served) else {
                panic!("{s}: page {:?}, /metrics {:?}", page[s], m["sections"][s]);
            };
            // Whole seconds on the page, and a refreshed event at most a second apart.
            assert!((shown - served).abs() <= 2.0, "{s}: the page shows {shown} s, /metrics {served} s");
        }
    });
}

/// Issue 21: the page and its stream behind TLS and basic auth (a
/// certificate made at test time; the browser ignores that no trusted CA
/// signed it) show the live numbers and follow a change.
#[test]
fn the_page_works_behind_tls_and_basic_auth() {
    let fx = busy_fixture();
    let dir = fx.dir.path();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .and_then(|p| p.self_signed(&key))
        .expect("certificate");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("write");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write");
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let config = dir.join("web.yml");
    std::fs::write(
        &config,
        format!("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  viewer: {hash}\n"),
    )
    .expect("write");
    let port = support::free_port();
    let mut child = Binary::command(&[
        ("ORCH_DB_PATH", &fx.path.display().to_string()),
        ("ORCH_BIND", &format!("127.0.0.1:{port}")),
        ("ORCH_REFRESH_MS", "100"),
        ("ORCH_WEB_CONFIG_FILE", &config.display().to_string()),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn");
    support::wait_for(SOON, "the TLS port", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    let depth = || -> i64 {
        fx.conn().query_row("SELECT count(*) FROM jobs WHERE status = 'queued'", [], |r| r.get(0)).expect("count")
    };
    with_browser(1280, 1000, async |c| {
        c.goto(&format!("https://viewer:s3cret@127.0.0.1:{port}/")).await.expect("load / over TLS with a user");
        wait_text(c, "#mode", "the stream", |t| t.starts_with("live")).await;
        let before = depth();
        wait_text(c, "#queue-depth", "the queue depth", |t| t == before.to_string()).await;
        fx.exec("INSERT INTO jobs (agent, status) VALUES ('developer', 'queued');");
        wait_text(c, "#queue-depth", "the new depth", |t| t == (before + 1).to_string()).await;
    });
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Issue 24, item 6: a right-to-left override in a status cannot reorder
/// the text around it, and a 1 KB unbroken value does not widen the page.
#[test]
fn hostile_text_neither_reorders_nor_widens_the_page() {
    let fx = busy_fixture();
    fx.exec(&format!(
        "INSERT INTO jobs (agent, status) VALUES ('developer', 'paused\u{202E}'), ('developer', 'paused\u{202E}');
         INSERT INTO tasks (work_item_id, stage) VALUES ('ORCH-9', '{}');",
        "x".repeat(1000)
    ));
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    with_browser(1280, 1000, async |c| {
        c.goto(&bin.url("/")).await.expect("load /");
        wait_text(c, "#mode", "the stream", |t| t.starts_with("live")).await;
        wait_text(c, "#queue-other", "the odd status", |t| t.contains('\u{202E}')).await;
        let isolated = script(
            c,
            "return [...document.querySelectorAll('#queue-other bdi')].some(b => b.textContent.includes('\\u202e'));",
        )
        .await;
        assert_eq!(isolated, Value::Bool(true), "the status is in a <bdi>");
        let overflow = script(c, "return document.documentElement.scrollWidth - window.innerWidth;").await;
        assert!(overflow.as_i64().is_some_and(|px| px <= 1), "the page scrolls sideways by {overflow} px");
    });
}

#[test]
fn the_page_is_usable_at_a_phone_width_and_by_keyboard() {
    let fx = busy_fixture();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    with_browser(375, 800, async |c| {
        c.goto(&bin.url("/")).await.expect("load /");
        wait_text(c, "#mode", "the stream", |t| t.starts_with("live")).await;
        let overflow = script(c, "return document.documentElement.scrollWidth - window.innerWidth;").await;
        assert!(overflow.as_i64().is_some_and(|px| px <= 1), "the page scrolls sideways by {overflow} px");
        // Every scrolling table is reachable with Tab, and status is text, not colour alone.
        let focusable = script(
            c,
            "return [...document.querySelectorAll('.scroll')].every(e => e.tabIndex === 0 && e.getAttribute('aria-label'));",
        )
        .await;
        assert_eq!(focusable, Value::Bool(true));
        let mut reached = Vec::new();
        for _ in 0..6 {
            c.active_element().await.expect("focus").send_keys("\u{e004}").await.expect("Tab");
            reached.push(script(c, "return document.activeElement.getAttribute('aria-label') || document.activeElement.textContent.trim();").await);
        }
        let reached: Vec<String> = reached.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        assert!(reached.iter().any(|r| r == "Running agents"), "Tab order: {reached:?}");
        screenshot(c, "page-phone.png").await;
    });
}

#[test]
fn the_page_polls_when_the_stream_is_refused() {
    let fx = busy_fixture();
    let bin = fx.serve(&[("ORCH_MAX_STREAMS", "0")]);
    bin.wait_all_ok();
    with_browser(1280, 1000, async |c| {
        c.goto(&bin.url("/")).await.expect("load /");
        wait_text(c, "#mode", "polling", |t| t.starts_with("polling")).await;
        let depth = off_runtime(|| bin.metrics())["queue"]["depth"].to_string();
        wait_text(c, "#queue-depth", "the depth", |t| t == depth).await;
        fx.exec("INSERT INTO jobs (agent, status) VALUES ('developer', 'queued');");
        let now = off_runtime(|| {
            support::wait_for(SOON, "the mirror to see the job", || {
                let d = bin.metrics()["queue"]["depth"].to_string();
                (d != depth).then_some(d)
            })
        });
        wait_text(c, "#queue-depth", "the polled change", |t| t == now).await;
    });
}

#[test]
fn with_the_kill_switch_off_the_page_says_the_mirror_is_disabled() {
    let bin = Binary::start(&[("ORCH_METRICS_ENABLED", "false")]);
    with_browser(1280, 800, async |c| {
        c.goto(&bin.url("/")).await.expect("load /");
        wait_text(c, "#mode", "disabled", |t| t == "disabled").await;
        let banner = c.find(Locator::Css("#disabled")).await.expect("banner");
        assert!(banner.is_displayed().await.unwrap_or(false));
        assert!(banner.text().await.unwrap_or_default().contains("disabled"));
        let main = c.find(Locator::Css("#main")).await.expect("main");
        assert!(!main.is_displayed().await.unwrap_or(true), "no data is shown");
    });
}

#[test]
fn the_page_stays_usable_with_a_thousand_agents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orch.sqlite");
    orchmirror::tools::generate::generate(&db, &orchmirror::tools::generate::Spec::jobs(2000).running(1000))
        .expect("generate");
    let bin = Binary::start(&[("ORCH_DB_PATH", &db.display().to_string())]);
    bin.wait_all_ok();
    with_browser(1280, 1000, async |c| {
        c.goto(&bin.url("/")).await.expect("load /");
        wait_text(c, "#mode", "the stream", |t| t.starts_with("live")).await;
        let start = Instant::now();
        while rows(c, "#agents-body").await != 1000 {
            assert!(start.elapsed() < SOON, "1,000 agent rows");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The page keeps answering: one full render of 1,000 rows, timed in the page.
        let ms = script(c, "const t = performance.now(); render(); return performance.now() - t;").await;
        eprintln!("render with 1,000 agents: {ms} ms");
        assert!(ms.as_f64().is_some(), "{ms}");
        let height = script(c, "return document.querySelector('#agents .scroll').clientHeight < document.querySelector('#agents-body').scrollHeight;").await;
        assert_eq!(height, Value::Bool(true), "the agents table scrolls inside its box");
    });
}

/// The page follows the changes-only stream (issue 35): with 60 agents, one
/// of them burning CPU, a change of its ticks reaches the page as an event
/// of a few hundred bytes, though the agents section is kilobytes, and the
/// page shows the agent's CPU from it.
#[test]
fn the_page_follows_a_tick_only_change_with_a_small_event() {
    let fx = Fixture::new();
    let mut children = Vec::new();
    let now = support::sqlite_ts(chrono::Utc::now());
    for i in 0..60 {
        let script = if i == 0 { "while :; do :; done" } else { "sleep 600" };
        let child = Command::new("sh").arg("-c").arg(script).stdin(Stdio::null()).spawn().expect("spawn an agent");
        fx.exec(&format!(
            "INSERT INTO jobs (id, agent, repo, status, started_at) VALUES ({job}, 'developer', 'core', 'running', '{now}');
             INSERT INTO agent_runs (job_id, agent, pid, model, started_at) VALUES ({job}, 'developer', {pid}, 'm', '{now}');",
            job = i + 1,
            pid = child.id()
        ));
        children.push(child);
    }
    let bin = fx.serve(&[("ORCH_REFRESH_MS", "500")]);
    bin.wait_all_ok();
    let whole = bin.metrics()["agents"].to_string().len();
    assert!(whole > 8_000, "the agents section is {whole} bytes");
    with_browser(1280, 1000, async |c| {
        c.goto(&bin.url("/")).await.expect("load /");
        wait_text(c, "#mode", "the shared stream", |t| t.starts_with("live (stream, shared")).await;
        // The busy agent's CPU % needs two samples: it comes from change events.
        let start = Instant::now();
        loop {
            let busy = script(c, "return document.querySelector('#agents-body tr td:nth-child(7)').textContent;").await;
            if busy.as_str().and_then(|t| t.parse::<f64>().ok()).is_some_and(|pct| pct > 20.0) {
                break;
            }
            assert!(start.elapsed() < SOON, "the busy agent's CPU % on the page: {busy}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let bytes = script(c, "return Number(document.documentElement.dataset.lastEventBytes);").await;
        let bytes = bytes.as_f64().unwrap_or(f64::NAN);
        assert!(bytes > 0.0 && bytes < 1_000.0, "the last event was {bytes} bytes; the section is {whole}");
    });
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn the_demo_page_screenshot() {
    // The demo, as `cargo run --release` serves it: the screenshot README shows.
    let bin = Binary::start(&[]);
    bin.wait_all_ok();
    with_browser(1280, 1500, async |c| {
        c.goto(&bin.url("/")).await.expect("load /");
        wait_text(c, "#mode", "the stream", |t| t.starts_with("live")).await;
        wait_text(c, "#agents-caption", "agents", |t| !t.starts_with("0 ")).await;
        // The demo's agents burn CPU: after two samples the page shows a percentage.
        let start = Instant::now();
        loop {
            let cpu = text(c, "#agents-body tr:first-child td:nth-child(7)").await;
            if cpu.parse::<f64>().is_ok_and(|p| p >= 0.0) {
                break;
            }
            assert!(start.elapsed() < SOON, "no CPU % for the first agent: {cpu:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // And a spend rate (the cost total's readings ten seconds apart).
        tokio::time::timeout(SOON, async {
            while !text(c, "#cost-rate").await.contains("an hour") {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("a spend rate within 15 s");
        // docs/demo.png, README's picture, is this file.
        let path = screenshot(c, "demo.png").await;
        assert!(std::fs::metadata(path).is_ok_and(|m| m.len() > 10_000));
    });
}

#[test]
fn with_the_page_off_slash_is_the_json_404() {
    let (_fx, bin) = {
        let fx = Fixture::one_of_each();
        let bin = fx.serve(&[("ORCH_UI_ENABLED", "false")]);
        (fx, bin)
    };
    let (status, ct, body) = get(&bin.url("/"));
    assert_eq!((status, ct.as_str()), (404, "application/json"), "{body}");
    let (status, ct, body) = get(&bin.url("/?worker=stream"));
    assert_eq!((status, ct.as_str()), (404, "application/json"), "the page's worker goes with it: {body}");
    let on = Fixture::one_of_each();
    let bin = on.serve(&[]);
    let (status, ct, body) = get(&bin.url("/"));
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert_eq!(body, orchmirror::test_util::page_html(), "the page is the one built in");
    let version = format!("<span id=\"version\">{} (", env!("CARGO_PKG_VERSION"));
    assert!(body.contains(&version) && !body.contains("__ORCHMIRROR_VERSION__"), "the page names its version");
    assert!(get_json(&bin.url("/health"))["status"].is_string());
    let (status, ct, body) = get(&bin.url("/?worker=stream"));
    assert_eq!((status, ct.as_str()), (200, "text/javascript; charset=utf-8"), "the page's shared worker");
    assert!(body.contains("new EventSource(\"metrics/stream?refreshed=1&changes=1\")"), "{body:.200}");
}
