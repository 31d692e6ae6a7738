//! Shared harness: fixture databases on real files, the real binary as a child
//! process, and the mirror in-process on a real socket.

pub mod sse;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;

/// A fixture database in its own temporary directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Fixture {
    /// An empty orchestrator database (schema and indexes, no rows).
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("orch.sqlite");
        let conn = Connection::open(&path).expect("create fixture db");
        conn.execute_batch(orchmirror::SCHEMA_SQL).expect("schema");
        conn.execute_batch(orchmirror::SCHEMA_INDEXES_SQL).expect("indexes");
        Fixture { dir, path }
    }

    /// A database with one row in every section: an active task, a running
    /// job and its run (with a cost).
    pub fn one_of_each() -> Fixture {
        let fx = Fixture::new();
        fx.exec(
            "INSERT INTO tasks (work_item_id, stage) VALUES ('ORCH-1', 'review');
             INSERT INTO jobs (agent, status, started_at) VALUES ('developer', 'running', datetime('now'));
             INSERT INTO agent_runs (job_id, agent, cost_usd) VALUES (1, 'developer', 1.25);",
        );
        fx
    }

    /// A read-write connection (the test plays the orchestrator).
    pub fn conn(&self) -> Connection {
        let c = Connection::open(&self.path).expect("open fixture db");
        c.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
        c
    }

    /// Runs SQL against the fixture.
    pub fn exec(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap_or_else(|e| panic!("fixture SQL failed: {e}\n{sql}"));
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// The real binary serving this fixture with fast refreshes
    /// (`ORCH_REFRESH_MS=100`); `env` adds or overrides variables.
    pub fn serve(&self, env: &[(&str, &str)]) -> Binary {
        let db = self.path.display().to_string();
        let mut all = vec![("ORCH_DB_PATH", db.as_str()), ("ORCH_REFRESH_MS", "100")];
        all.extend_from_slice(env);
        Binary::start(&all)
    }
}

/// The four built-in sections' names, in envelope order.
pub const SECTIONS: [&str; 4] = [
    orchmirror::SectionName::STAGES.as_str(),
    orchmirror::SectionName::QUEUE.as_str(),
    orchmirror::SectionName::AGENTS.as_str(),
    orchmirror::SectionName::COST.as_str(),
];

/// A timestamp as the orchestrator writes it (`datetime('now')`'s form).
pub fn sqlite_ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Polls `f` every 20 ms on the running actix System until it is true, or
/// panics after `within`.
pub async fn wait_until(what: &str, within: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether this process can run another process as another user (root, and
/// `setpriv`), as the tests of file ownership need. When it cannot, the
/// test is skipped with a message saying what it needs (`why`), except under
/// `CI=true`, where that is a failure: CI runs as root, so such a test never
/// passes there without running.
pub fn privileged(why: &str) -> bool {
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let setpriv = std::process::Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    if root && setpriv {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: this test needs root and setpriv ({why})");
    eprintln!("skipped: needs root and setpriv ({why}); run the tests as root to include it");
    false
}

/// The path of a system tool a test needs. Missing, the test is skipped
/// with a message saying how to enable it, except under `CI=true`, where a
/// missing tool is a failure (`.ci/run` installs it).
pub fn system_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{name} is not installed, and CI=true needs it");
        // The Debian package that has it, where its name differs (as .ci/run installs them).
        let package = match name {
            "promtool" | "prometheus" => "prometheus",
            "systemd-analyze" => "systemd",
            "chromedriver" => "chromium-driver",
            "python3" => "python3-minimal",
            other => other,
        };
        eprintln!("SKIPPED: {name} is not installed (apt-get install {package}, or run .ci/run, to run this test)");
    }
    found
}

/// A free loopback port (bound then released; the child binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

/// GET `url`: (status, content-type, body).
pub fn get(url: &str) -> (u16, String, String) {
    let resp = client().get(url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, ct, resp.text().expect("body"))
}

pub fn get_json(url: &str) -> Value {
    let (status, ct, body) = get(url);
    assert_eq!(status, 200, "GET {url}: {body}");
    assert_eq!(ct, "application/json", "GET {url}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

/// Polls `f` every 50 ms until it returns `Some`; `None` after `within`.
pub fn wait_for_or_none<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `orchmirror` binary running as a child process.
pub struct Binary {
    pub child: Child,
    pub base: String,
    pub port: u16,
}

impl Binary {
    /// Command for the binary with a clean `ORCH_*` environment plus `env`.
    pub fn command(env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchmirror"));
        for (k, _) in std::env::vars() {
            if k.starts_with("ORCH_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the binary on a free port and waits until it answers `/health`.
    pub fn start(env: &[(&str, &str)]) -> Binary {
        Self::start_at(free_port(), env)
    }

    /// Starts the binary on 127.0.0.1:`port` and waits until it answers `/health`.
    pub fn start_at(port: u16, env: &[(&str, &str)]) -> Binary {
        let bind = format!("127.0.0.1:{port}");
        let mut all: Vec<(&str, &str)> = vec![("ORCH_BIND", &bind)];
        all.extend_from_slice(env);
        let child =
            Binary::command(&all).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn orchmirror");
        let mut bin = Binary { child, base: format!("http://{bind}"), port };
        let health = format!("{}/health", bin.base);
        let quick = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
        let start = Instant::now();
        loop {
            if quick.get(&health).send().is_ok() {
                break;
            }
            if let Ok(Some(status)) = bin.child.try_wait() {
                panic!("orchmirror exited early ({status}): {}", bin.stderr());
            }
            assert!(start.elapsed() < Duration::from_secs(20), "orchmirror did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        bin
    }

    /// Sends SIGTERM and waits for the exit status (killing after `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whatever the child wrote to stderr (call after it exited).
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate(Duration::from_secs(3));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running mirror reachable over HTTP, however it was started.
pub trait Serves {
    fn base(&self) -> &str;

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    fn metrics(&self) -> Value {
        get_json(&self.url("/metrics"))
    }

    /// Waits until every section is `ok`, returning that envelope.
    fn wait_all_ok(&self) -> Value {
        wait_for(Duration::from_secs(15), "all sections ok", || {
            let m = self.metrics();
            all_ok(&m).then_some(m)
        })
    }
}

impl Serves for Binary {
    fn base(&self) -> &str {
        &self.base
    }
}

impl Serves for InProcess {
    fn base(&self) -> &str {
        &self.base
    }
}

pub fn all_ok(m: &Value) -> bool {
    SECTIONS.iter().all(|s| m["sections"][s]["status"] == "ok")
}

/// The mirror running in-process (its own actix System on a thread) on a real socket.
pub struct InProcess {
    pub handle: orchmirror::MirrorHandle,
    pub base: String,
    system: actix_web::rt::System,
    server: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    pub fn start(settings: orchmirror::Settings) -> InProcess {
        Self::start_with(settings, |b| b)
    }

    /// Starts the mirror with what `build` adds to its builder (host sections, a probe).
    pub fn start_with(
        mut settings: orchmirror::Settings,
        build: impl FnOnce(orchmirror::MirrorBuilder) -> orchmirror::MirrorBuilder + Send + 'static,
    ) -> InProcess {
        settings.bind = "127.0.0.1:0".into();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix_web::rt::System::new();
            sys.block_on(async move {
                let builder = orchmirror::MirrorHandle::builder(settings.clone());
                let handle = build(builder).start().expect("start mirror");
                let (server, addrs) =
                    orchmirror::serve::http::server(&settings, handle.clone(), std::future::pending()).expect("bind");
                let _ = tx.send((handle, addrs[0], actix_web::rt::System::current(), server.handle()));
                let _ = server.await;
            });
        });
        let (handle, addr, system, server): (_, SocketAddr, _, _) =
            rx.recv_timeout(Duration::from_secs(10)).expect("server up");
        InProcess { handle, base: format!("http://{addr}"), system, server, thread: Some(thread) }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.handle.stop();
        // Stopping the server ends the System's block_on; then the System itself.
        let server = self.server.clone();
        actix_web::rt::System::new().block_on(async move { server.stop(false).await });
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Settings for a fixture with fast refreshes.
pub fn fast_settings(db: &Path) -> orchmirror::Settings {
    let mut s = orchmirror::Settings::default();
    s.db_path = Some(db.to_path_buf());
    s.refresh = orchmirror::RefreshPeriods::uniform(Duration::from_millis(100));
    s
}

/// Parses an RFC 3339 / contract timestamp.
pub fn ts(s: &Value) -> chrono::DateTime<chrono::Utc> {
    let raw = s.as_str().unwrap_or_else(|| panic!("not a timestamp string: {s}"));
    chrono::DateTime::parse_from_rfc3339(raw).unwrap_or_else(|e| panic!("{raw}: {e}")).to_utc()
}
