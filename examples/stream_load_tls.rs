//! What `/metrics/stream` costs over TLS, HTTP/1.1 (a connection per stream)
//! beside HTTP/2 (many streams on one connection), measured as
//! `examples/stream_load.rs` measures plain streams.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/stream_load_tls h1|h2 [STREAMS] [SECONDS] [CHANGES_PER_S] [H2_CONNECTIONS]
//! ```
//!
//! Runs `target/release/orchmirror` (or `ORCHMIRROR_BIN`) with TLS (a
//! self-signed certificate made here) on a generated database (1,000 jobs,
//! 10 running; WAL). Opens STREAMS streams (h2: spread over H2_CONNECTIONS
//! connections, default 1) and waits for every envelope: resident memory
//! per idle stream. Then a writer inserts a queued job CHANGES_PER_S times a
//! second for SECONDS, each change one `queue` event per stream: the
//! mirror's CPU per event per stream, beside its CPU with the writer and no
//! stream (measured first). Prints one JSON object. Defaults: 1,000 streams,
//! 15 s, 10 changes a second.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error>;

fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, a)| a).ok_or("no ) in stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok((f[11].parse::<f64>()? + f[12].parse::<f64>()?) / 100.0)
}

fn rss_bytes(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("VmRSS")?.parse::<u64>()? * 1024)
}

#[derive(Default)]
struct Seen {
    events: AtomicU64,
    opened: AtomicU64,
}

fn count(seen: &Seen, data: &[u8], opened: &mut bool) {
    let events = data.windows(7).filter(|w| *w == b"event: ").count() as u64;
    seen.events.fetch_add(events, Ordering::Relaxed);
    if !*opened && data.windows(15).any(|w| w == b"event: envelope") {
        *opened = true;
        seen.opened.fetch_add(1, Ordering::Relaxed);
    }
}

async fn tls(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// One HTTP/1.1 stream on a TLS connection of its own.
async fn h1_reader(port: u16, config: Arc<rustls::ClientConfig>, seen: Arc<Seen>) -> std::io::Result<()> {
    let mut s = tls(port, config).await?;
    s.write_all(b"GET /metrics/stream HTTP/1.1\r\nHost: localhost\r\n\r\n").await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut opened = false;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        count(&seen, &buf[..n], &mut opened);
    }
}

/// `streams` HTTP/2 streams on one TLS connection.
async fn h2_connection(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    streams: usize,
    seen: Arc<Seen>,
) -> Result<(), Error> {
    let s = tls(port, config).await?;
    let (send, connection) = h2::client::handshake(s).await?;
    tokio::spawn(connection);
    for _ in 0..streams {
        let request = http::Request::get(format!("https://localhost:{port}/metrics/stream")).body(())?;
        let mut send = send.clone().ready().await?;
        let (response, _) = send.send_request(request, true)?;
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let Ok(response) = response.await else { return };
            let mut body = response.into_body();
            let mut opened = false;
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                count(&seen, &chunk, &mut opened);
            }
        });
    }
    Ok(())
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
    let mode = args.get(1).map_or("h2", String::as_str).to_owned();
    if mode != "h1" && mode != "h2" {
        return Err("the first argument is h1 or h2".into());
    }
    let streams: usize = args.get(2).map_or(Ok(1_000), |a| a.parse())?;
    let seconds: f64 = args.get(3).map_or(Ok(15.0), |a| a.parse())?;
    let rate: f64 = args.get(4).map_or(Ok(10.0), |a| a.parse())?;
    let connections: usize = args.get(5).map_or(Ok(1), |a| a.parse())?.max(1);
    let bin = std::env::var("ORCHMIRROR_BIN").unwrap_or_else(|_| "target/release/orchmirror".into());
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let dir = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?.self_signed(&key)?;
    std::fs::write(dir.path().join("server.crt"), cert.pem())?;
    std::fs::write(dir.path().join("server.key"), key.serialize_pem())?;
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![if mode == "h2" { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    let client = Arc::new(client);

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
            .env("ORCH_WEB_CONFIG_FILE", &web)
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
    let writer = {
        let (db, on, stop) = (db.clone(), Arc::clone(&on), Arc::clone(&stop));
        std::thread::spawn(move || {
            let Ok(conn) = rusqlite::Connection::open(&db) else { return };
            let _ = conn.busy_timeout(Duration::from_secs(5));
            while !stop.load(Ordering::Relaxed) {
                if on.load(Ordering::Relaxed) {
                    let _ = conn.execute("INSERT INTO jobs (agent, status) VALUES ('bench', 'queued')", []);
                }
                std::thread::sleep(Duration::from_secs_f64(1.0 / rate));
            }
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let phase = Duration::from_secs_f64(seconds);
    std::thread::sleep(Duration::from_secs(2));

    // The writer, no stream.
    on.store(true, Ordering::Relaxed);
    let c0 = cpu_seconds(pid)?;
    std::thread::sleep(phase);
    let cpu_alone = cpu_seconds(pid)? - c0;
    on.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));

    // The streams, idle.
    let rss_before = rss_bytes(pid)?;
    let seen = Arc::new(Seen::default());
    rt.block_on(async {
        if mode == "h1" {
            for _ in 0..streams {
                tokio::spawn(h1_reader(port, Arc::clone(&client), Arc::clone(&seen)));
            }
        } else {
            for c in 0..connections {
                let share = streams / connections + usize::from(c < streams % connections);
                let (client, seen) = (Arc::clone(&client), Arc::clone(&seen));
                tokio::spawn(async move {
                    if let Err(e) = h2_connection(port, client, share, seen).await {
                        eprintln!("an h2 connection: {e}");
                    }
                });
            }
        }
        let opening = Instant::now();
        while seen.opened.load(Ordering::Relaxed) < streams as u64 && opening.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let opened = seen.opened.load(Ordering::Relaxed);
    let rss_idle = rss_bytes(pid)?;

    // The writer, every stream read.
    seen.events.store(0, Ordering::Relaxed);
    on.store(true, Ordering::Relaxed);
    let c0 = cpu_seconds(pid)?;
    rt.block_on(async { tokio::time::sleep(phase).await });
    let cpu_busy = cpu_seconds(pid)? - c0;
    let events = seen.events.load(Ordering::Relaxed);
    on.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();

    let round = |v: f64| (v * 100.0).round() / 100.0;
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "streams": streams,
            "connections": if mode == "h1" { streams } else { connections.min(streams) },
            "streams_with_envelope": opened,
            "seconds": seconds,
            "changes_per_s": rate,
            "cpu_percent_without_streams": round(100.0 * cpu_alone / seconds),
            "cpu_percent_with_streams": round(100.0 * cpu_busy / seconds),
            "events_delivered": events,
            "us_per_event_per_stream": (events > 0).then(|| round((cpu_busy - cpu_alone) / events as f64 * 1e6)),
            "kib_per_idle_stream": round((rss_idle as f64 - rss_before as f64) / 1024.0 / streams.max(1) as f64),
            "rss_mb_idle_streams": round(rss_idle as f64 / 1048576.0),
        })
    );
    Ok(())
}
