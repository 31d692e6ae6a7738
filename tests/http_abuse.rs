//! What a hostile or broken client can do to the HTTP server: it keeps
//! answering well-behaved clients, and shuts down cleanly on signals.

pub mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Binary, Fixture, Serves};

fn start() -> (Fixture, Binary) {
    let fx = Fixture::new();
    let bin = fx.serve(&[]);
    bin.wait_all_ok();
    (fx, bin)
}

fn connect(bin: &Binary) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", bin.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    s
}

/// Sends raw bytes and returns the first response line (empty if the server just closed).
fn raw(bin: &Binary, bytes: &[u8]) -> String {
    let mut s = connect(bin);
    let _ = s.write_all(bytes);
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
}

fn still_serves(bin: &Binary) {
    let t = Instant::now();
    let m = bin.metrics();
    assert_eq!(m["schema_version"], 1);
    assert!(t.elapsed() < Duration::from_secs(5), "well-behaved client waited {:?}", t.elapsed());
}

/// actix-http refuses a request head over 128 KiB or with more than 96 headers.
#[test]
fn garbage_long_urls_and_huge_headers_are_refused_and_service_continues() {
    let (_fx, bin) = start();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let line = raw(&bin, &garbage);
    assert!(line.is_empty() || line.starts_with("HTTP/1.1 4"), "garbage: {line}");
    still_serves(&bin);

    let url = format!("GET /metrics?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(200_000));
    let line = raw(&bin, url.as_bytes());
    assert!(line.is_empty() || line.starts_with("HTTP/1.1 4"), "long URL: {line}");
    still_serves(&bin);

    let header = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(200_000));
    let line = raw(&bin, header.as_bytes());
    assert!(line.is_empty() || line.starts_with("HTTP/1.1 4"), "huge header: {line}");
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let line = raw(&bin, format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes());
    assert!(line.is_empty() || line.starts_with("HTTP/1.1 4"), "too many headers: {line}");
    still_serves(&bin);
}

#[test]
fn half_written_requests_are_timed_out_and_do_not_block_others() {
    let (_fx, bin) = start();
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = connect(&bin);
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").expect("partial write");
            s
        })
        .collect();
    still_serves(&bin);
    // The server gives up on a request head that never completes (5 s limit).
    let t = Instant::now();
    let mut buf = [0u8; 256];
    let n = slow[0].read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(t.elapsed() < Duration::from_secs(14), "closed after {:?}", t.elapsed());
    slow.clear();
    still_serves(&bin);
}

#[test]
fn hundreds_of_idle_connections_do_not_starve_a_real_client() {
    let (_fx, bin) = start();
    let idle: Vec<TcpStream> = (0..400).map(|_| connect(&bin)).collect();
    for _ in 0..5 {
        still_serves(&bin);
    }
    drop(idle);
}

fn shutdown_on(signal: &str) {
    let (_fx, mut bin) = start();
    // An idle keep-alive connection must not hold the shutdown up.
    let mut conn = connect(&bin);
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut buf = vec![0u8; 65536];
    assert!(conn.read(&mut buf).unwrap_or(0) > 0);
    let t = Instant::now();
    let _ = std::process::Command::new("kill").arg(format!("-{signal}")).arg(bin.child.id().to_string()).status();
    let status = support::wait_for(Duration::from_secs(10), "exit", || bin.child.try_wait().ok().flatten());
    assert!(status.success(), "{signal}: {status}");
    // About 2 s (the graceful-shutdown bound); generous for a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(6), "{signal}: exit took {:?}", t.elapsed());
    assert!(TcpStream::connect(("127.0.0.1", bin.port)).is_err(), "no longer listening");
}

#[test]
fn sigterm_stops_cleanly() {
    shutdown_on("TERM");
}

#[test]
fn sigint_stops_cleanly() {
    shutdown_on("INT");
}
