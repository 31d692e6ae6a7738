//! What `/metrics/stream` costs the mirror with many readers, measured with a
//! load generator cheap enough not to be the bottleneck (one thread, epoll
//! through tokio, no parsing beyond counting events and reading the queue's
//! depth).
//!
//! ```text
//! cargo build --release && cargo run --release --example stream_load -- [STREAMS] [SECONDS] [CHANGES_PER_S]
//! ```
//!
//! Runs `target/release/orchmirror` (or `ORCHMIRROR_BIN`) on a generated
//! database (1,000 jobs, 10 running; WAL) while a writer inserts a queued job
//! CHANGES_PER_S times a second. Each change is one `queue` event per stream.
//! Three phases of SECONDS each:
//!
//! - A: the writer and one `/metrics` poller (20 a second), no stream: the
//!   mirror's CPU and the poller's latencies without streams;
//! - B: STREAMS streams opened and idle (writer paused): resident memory per
//!   idle stream;
//! - C: the writer again, every stream read, the poller again: CPU per event
//!   per stream = (CPU in C − CPU in A) / events delivered, the delivery
//!   latency (commit to the last stream's read of that change) and the
//!   poller's latencies with streams.
//!
//! Prints one JSON object. Defaults: 10,000 streams, 20 s, 10 changes a second.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error>;

fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, a)| a).ok_or("no ) in stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_bytes(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("VmRSS")?.parse::<u64>()? * 1024)
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

/// When each queue depth was committed.
type Commits = Arc<Mutex<HashMap<u64, Instant>>>;

/// Inserts a queued job `rate` times a second while `on`; records when each depth was committed.
fn writer(path: std::path::PathBuf, rate: f64, on: Arc<AtomicBool>, stop: Arc<AtomicBool>, commits: Commits) {
    let Ok(db) = rusqlite::Connection::open(&path) else { return };
    let _ = db.busy_timeout(Duration::from_secs(5));
    while !stop.load(Ordering::Relaxed) {
        if on.load(Ordering::Relaxed) {
            let done = db
                .execute("INSERT INTO jobs (agent, status, created_at) VALUES ('bench', 'queued', datetime('now'))", [])
                .and_then(|_| {
                    db.query_row("SELECT COUNT(*) FROM jobs WHERE status = 'queued'", [], |r| r.get::<_, i64>(0))
                });
            if let Ok(depth) = done.map(|d| d.max(0) as u64) {
                commits.lock().unwrap_or_else(|p| p.into_inner()).insert(depth, Instant::now());
            }
        }
        std::thread::sleep(Duration::from_secs_f64(1.0 / rate));
    }
}

/// The first `"depth":N` in `data`.
fn depth_in(data: &[u8]) -> Option<u64> {
    let at = data.windows(8).position(|w| w == b"\"depth\":")? + 8;
    let digits: Vec<u8> = data[at..].iter().take_while(|b| b.is_ascii_digit()).copied().collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// What the streams saw.
#[derive(Default)]
struct Seen {
    events: AtomicU64,
    /// Streams that got their envelope.
    opened: AtomicU64,
    /// Per depth, when the last stream read it.
    last_read: Mutex<HashMap<u64, Instant>>,
}

/// One stream: counts events, notes when each queue depth arrives.
async fn reader(port: u16, seen: Arc<Seen>) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics/stream HTTP/1.1\r\nHost: localhost\r\n\r\n").await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut opened = false;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let data = &buf[..n];
        let events = data.windows(7).filter(|w| *w == b"event: ").count() as u64;
        seen.events.fetch_add(events, Ordering::Relaxed);
        if !opened && data.windows(15).any(|w| w == b"event: envelope") {
            opened = true;
            seen.opened.fetch_add(1, Ordering::Relaxed);
        } else if let Some(depth) = depth_in(data) {
            seen.last_read.lock().unwrap_or_else(|p| p.into_inner()).insert(depth, Instant::now());
        }
    }
}

/// Polls `/metrics` 20 times a second on a thread of its own (so the
/// streams' reader never delays it) until `stop`; each answer's latency in ms.
fn poller(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<f64>> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let got = (|| {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
                let mut body = Vec::new();
                s.read_to_end(&mut body)?;
                Ok::<_, std::io::Error>(body.len())
            })();
            if got.is_ok() {
                out.push(t.elapsed().as_secs_f64() * 1e3);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        out
    })
}

struct Mirror(Child);

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let streams: usize = args.get(1).map_or(Ok(10_000), |a| a.parse())?;
    let seconds: f64 = args.get(2).map_or(Ok(20.0), |a| a.parse())?;
    let rate: f64 = args.get(3).map_or(Ok(10.0), |a| a.parse())?;
    let bin = std::env::var("ORCHMIRROR_BIN").unwrap_or_else(|_| "target/release/orchmirror".into());
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("orch.sqlite");
    let generated = Command::new(&bin).arg("generate").arg(&db).args(["--jobs", "1000", "--running", "10"]).status()?;
    if !generated.success() {
        return Err(format!("{bin} generate failed").into());
    }
    rusqlite::Connection::open(&db)?.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mirror = Mirror(
        Command::new(&bin)
            .env("ORCH_DB_PATH", &db)
            .env("ORCH_BIND", format!("127.0.0.1:{port}"))
            .env("ORCH_REFRESH_MS", "100")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = mirror.0.id();
    let up = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if up.elapsed() > Duration::from_secs(20) {
            return Err("the mirror did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let (on, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let commits: Commits = Arc::default();
    let w = {
        let (db, on, stop, commits) = (db.clone(), Arc::clone(&on), Arc::clone(&stop), Arc::clone(&commits));
        std::thread::spawn(move || writer(db, rate, on, stop, commits))
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let phase = Duration::from_secs_f64(seconds);
    std::thread::sleep(Duration::from_secs(2));

    // A: the writer and the poller, no stream.
    on.store(true, Ordering::Relaxed);
    let c0 = cpu_seconds(pid)?;
    let polling = Arc::new(AtomicBool::new(false));
    let p = poller(port, Arc::clone(&polling));
    std::thread::sleep(phase);
    polling.store(true, Ordering::Relaxed);
    let mut without = p.join().unwrap_or_default();
    let cpu_a = cpu_seconds(pid)? - c0;
    on.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));

    // B: the streams, idle.
    let rss_before = rss_bytes(pid)?;
    let seen = Arc::new(Seen::default());
    let opened_at = Instant::now();
    let _streams: Vec<_> = rt.block_on(async {
        let tasks: Vec<_> = (0..streams).map(|_| tokio::spawn(reader(port, Arc::clone(&seen)))).collect();
        while seen.opened.load(Ordering::Relaxed) < streams as u64 && opened_at.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        tasks
    });
    let opened = seen.opened.load(Ordering::Relaxed);
    let rss_idle = rss_bytes(pid)?;

    // C: the writer, every stream read, the poller.
    seen.events.store(0, Ordering::Relaxed);
    commits.lock().unwrap_or_else(|p| p.into_inner()).clear();
    on.store(true, Ordering::Relaxed);
    let c0 = cpu_seconds(pid)?;
    // For a profiler (scripts/stream-profile.sh): the busy phase starts now.
    eprintln!("phase C: pid {pid}, {seconds} s");
    let polling = Arc::new(AtomicBool::new(false));
    let p = poller(port, Arc::clone(&polling));
    rt.block_on(async { tokio::time::sleep(phase).await });
    polling.store(true, Ordering::Relaxed);
    let mut with = p.join().unwrap_or_default();
    let cpu_c = cpu_seconds(pid)? - c0;
    let events = seen.events.load(Ordering::Relaxed);
    let rss_busy = rss_bytes(pid)?;
    on.store(false, Ordering::Relaxed);
    // Let the last changes arrive before reading the delivery times.
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
    stop.store(true, Ordering::Relaxed);
    let _ = w.join();

    let commits = commits.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let reads = seen.last_read.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut delivery: Vec<f64> = commits
        .iter()
        .filter_map(|(depth, at)| Some(reads.get(depth)?.saturating_duration_since(*at).as_secs_f64() * 1e3))
        .collect();
    delivery.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    with.sort_by(f64::total_cmp);
    let per_event_us = if events > 0 { Some((cpu_c - cpu_a) / events as f64 * 1e6) } else { None };
    let round = |x: Option<f64>| x.map(|v| (v * 100.0).round() / 100.0);
    let report = serde_json::json!({
        "streams": streams,
        "streams_with_envelope": opened,
        "seconds": seconds,
        "changes_per_s": rate,
        "cpu_percent_without_streams": round(Some(100.0 * cpu_a / seconds)),
        "cpu_percent_with_streams": round(Some(100.0 * cpu_c / seconds)),
        "events_delivered": events,
        "us_per_event_per_stream": round(per_event_us),
        "rss_mb_before": round(Some(rss_before as f64 / 1048576.0)),
        "rss_mb_idle_streams": round(Some(rss_idle as f64 / 1048576.0)),
        "kib_per_idle_stream": round(Some((rss_idle as f64 - rss_before as f64) / 1024.0 / streams.max(1) as f64)),
        "rss_mb_busy": round(Some(rss_busy as f64 / 1048576.0)),
        "changes_timed": delivery.len(),
        "delivery_ms_p50": round(percentile(&delivery, 0.5)),
        "delivery_ms_p99": round(percentile(&delivery, 0.99)),
        "metrics_ms_p99_without_streams": round(percentile(&without, 0.99)),
        "metrics_ms_p99_with_streams": round(percentile(&with, 0.99)),
    });
    println!("{report}");
    Ok(())
}
