//! `/metrics` end to end through a real actix-web server on loopback, with 0,
//! 10 and 1,000 running agents, against a minimal actix-web handler serving a
//! fixed body of the same size (the ceiling), one keep-alive client.
//!
//! `cargo bench --bench http` (concurrent throughput: `scripts/throughput.sh`)

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use orchmirror::tools::generate::{Spec, generate};
use orchmirror::{MirrorHandle, RefreshPeriods, Settings};

fn database(running: u64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("http-{running}-agents.sqlite"));
    if !path.exists() {
        generate(&path, &Spec::jobs(5_000.max(2 * running)).running(running)).expect("generate");
    }
    path
}

/// Runs a server on its own thread; returns its base URL and a stopper.
fn serve<F>(make: F) -> (String, actix_web::dev::ServerHandle)
where
    F: FnOnce() -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let (server, addr) = make().expect("bind");
            let _ = tx.send((format!("http://{addr}"), server.handle()));
            let _ = server.await;
        })
    });
    rx.recv().expect("server up")
}

/// The mirror's standalone server on `path` (1 s refreshes), on its own thread.
fn mirror(path: PathBuf) -> (String, actix_web::dev::ServerHandle) {
    serve(move || {
        let mut settings = Settings::default();
        settings.db_path = Some(path);
        settings.bind = "127.0.0.1:0".into();
        settings.refresh = RefreshPeriods::uniform(Duration::from_millis(1000));
        let mirror = MirrorHandle::start(&settings).map_err(std::io::Error::other)?;
        let (server, addrs) = orchmirror::serve::http::server(&settings, mirror, std::future::pending())?;
        Ok((server, addrs[0]))
    })
}

fn end_to_end(c: &mut Criterion) {
    let client = reqwest::blocking::Client::new();
    let mut group = c.benchmark_group("http");
    group.sample_size(30).measurement_time(Duration::from_secs(3));
    for agents in [0u64, 10, 1000] {
        let path = database(agents);
        let (base, handle) = mirror(path);
        let url = format!("{base}/metrics");
        let start = Instant::now();
        let body = loop {
            let body = client.get(&url).send().and_then(|r| r.bytes()).expect("metrics");
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            if ["stages", "queue", "agents", "cost"].iter().all(|s| v["sections"][s]["status"] == "ok") {
                break body;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "mirror not ready");
            std::thread::sleep(Duration::from_millis(50));
        };
        group.throughput(criterion::Throughput::Bytes(body.len() as u64));
        group.bench_function(BenchmarkId::new("metrics", agents), |b| {
            b.iter(|| black_box(client.get(&url).send().and_then(|r| r.bytes()).expect("metrics")))
        });

        // The ceiling: the same bytes from a handler that does nothing else.
        let fixed = body.clone();
        let (fixed_base, fixed_handle) = serve(move || {
            let server = HttpServer::new(move || {
                let fixed = fixed.clone();
                App::new().route(
                    "/metrics",
                    web::get().to(move || {
                        let fixed = fixed.clone();
                        async move { HttpResponse::Ok().content_type("application/json").body(fixed) }
                    }),
                )
            })
            .bind("127.0.0.1:0")?;
            let addr = server.addrs()[0];
            Ok((server.run(), addr))
        });
        let fixed_url = format!("{fixed_base}/metrics");
        group.bench_function(BenchmarkId::new("fixed_body_ceiling", agents), |b| {
            b.iter(|| black_box(client.get(&fixed_url).send().and_then(|r| r.bytes()).expect("fixed")))
        });
        actix_web::rt::System::new().block_on(async move {
            handle.stop(false).await;
            fixed_handle.stop(false).await;
        });
    }
    group.finish();
}

/// What compression costs per `/metrics` request (actix-web's `Compress`
/// middleware, as the standalone server runs it): the same request with
/// `Accept-Encoding: identity`, `gzip`, `br` and `zstd`, with 1,000 and
/// 10,000 running agents. The client does not decompress, so the difference
/// is the server's encoding plus the (smaller) transfer.
fn compression(c: &mut Criterion) {
    let client = reqwest::blocking::Client::new();
    let mut group = c.benchmark_group("compression");
    group.sample_size(20).measurement_time(Duration::from_secs(4));
    for agents in [1000u64, 10_000] {
        let path = database(agents);
        let (base, handle) = mirror(path);
        let url = format!("{base}/metrics");
        let start = Instant::now();
        while !client.get(&url).send().and_then(|r| r.text()).is_ok_and(|b| b.matches("\"ok\"").count() == 4) {
            assert!(start.elapsed() < Duration::from_secs(30), "mirror not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        for encoding in ["identity", "gzip", "br", "zstd"] {
            let size = client.get(&url).header("Accept-Encoding", encoding).send().and_then(|r| r.bytes());
            let size = size.map(|b| b.len()).unwrap_or_default();
            eprintln!("compression/{encoding}/{agents}: {size} bytes on the wire");
            group.bench_function(BenchmarkId::new(encoding, agents), |b| {
                b.iter(|| {
                    black_box(
                        client
                            .get(&url)
                            .header("Accept-Encoding", encoding)
                            .send()
                            .and_then(|r| r.bytes())
                            .expect("get"),
                    )
                })
            });
        }
        actix_web::rt::System::new().block_on(async move { handle.stop(false).await });
    }
    group.finish();
}

criterion_group!(benches, end_to_end, compression);
criterion_main!(benches);
