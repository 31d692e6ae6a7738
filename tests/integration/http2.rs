//! HTTP/2 over TLS (issue 34): ALPN offers `h2` and `http/1.1` unless the web
//! configuration's `http_server_config.http2` is false (the exporter-toolkit's
//! key and default). Over one h2 connection a client gets `/metrics`, the
//! exposition, basic authentication's answers and many streams at once, each
//! following a change. A real h2 client (the `h2` crate over rustls), the
//! real binary, a real database.

use crate::support;
use crate::tls::{Ca, start, stop};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use support::{Fixture, wait_for};

const USER: &str = "scraper";
const PASSWORD: &str = "s3cret";

/// A web configuration with TLS, one user, and `extra` lines.
fn web_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let hash = bcrypt::hash(PASSWORD, 4).expect("hash");
    let path = dir.join("web.yml");
    let text = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  {USER}: {hash}\n{extra}"
    );
    std::fs::write(&path, text).expect("write");
    path
}

/// A TLS connection to the mirror offering `h2` and `http/1.1`: the stream
/// and the protocol the server chose.
async fn tls(port: u16, ca: &Ca) -> std::io::Result<(tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Vec<u8>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let chosen = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default();
    Ok((stream, chosen))
}

/// `GET path` on the h2 connection, with the user's password when `auth`.
async fn get(send: &h2::client::SendRequest<Bytes>, port: u16, path: &str, auth: bool) -> (u16, h2::RecvStream) {
    use base64::Engine;
    let mut request = http::Request::get(format!("https://localhost:{port}{path}"));
    if auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        request = request.header("authorization", format!("Basic {token}"));
    }
    let mut send = send.clone().ready().await.expect("the connection takes a request");
    let (response, _) = send.send_request(request.body(()).expect("request"), true).expect("send");
    let response = response.await.expect("a response");
    (response.status().as_u16(), response.into_body())
}

/// The body's text until it contains `needle` (or the whole body, or what
/// came within `within`).
async fn read_until(body: &mut h2::RecvStream, needle: &str, within: Duration) -> String {
    let mut text = String::new();
    let _ = tokio::time::timeout(within, async {
        while let Some(chunk) = body.data().await {
            let Ok(chunk) = chunk else { break };
            let _ = body.flow_control().release_capacity(chunk.len());
            text.push_str(&String::from_utf8_lossy(&chunk));
            if !needle.is_empty() && text.contains(needle) {
                break;
            }
        }
    })
    .await;
    text
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn over_tls_one_http2_connection_serves_metrics_auth_the_exposition_and_many_streams() {
    let fx = Fixture::one_of_each();
    let ca = Ca::new();
    ca.server_files(fx.dir.path());
    let config = web_config(fx.dir.path(), "");
    let port = support::free_port();
    let child = start(&fx, &config, port);
    runtime().block_on(async {
        let started = std::time::Instant::now();
        let (stream, chosen) = loop {
            match tls(port, &ca).await {
                Ok(ok) => break ok,
                Err(e) => {
                    assert!(started.elapsed() < Duration::from_secs(20), "the mirror over TLS: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(chosen, b"h2", "ALPN chose HTTP/2");
        let (send, connection) = h2::client::handshake(stream).await.expect("an HTTP/2 connection");
        tokio::spawn(connection);

        // Basic authentication holds over h2.
        let (status, _) = get(&send, port, "/metrics", false).await;
        assert_eq!(status, 401, "no password, no data");
        let (status, mut body) = get(&send, port, "/metrics", true).await;
        assert_eq!(status, 200);
        let text = read_until(&mut body, "", Duration::from_secs(10)).await;
        let envelope: serde_json::Value = serde_json::from_str(&text).expect("the envelope as JSON");
        assert_eq!(envelope["schema_version"], 1, "{text:.200}");

        // The exposition, as a scraper asks for it.
        let (status, mut body) = get(&send, port, "/metrics/prometheus", true).await;
        assert_eq!(status, 200);
        let exposition = read_until(&mut body, "", Duration::from_secs(10)).await;
        assert!(exposition.contains("orchmirror_"), "{exposition:.200}");

        // Eight streams at once on the one connection (a browser's tabs over
        // h2 need no connection each), and the page.
        let mut streams = Vec::new();
        for _ in 0..8 {
            let (status, mut body) = get(&send, port, "/metrics/stream", true).await;
            assert_eq!(status, 200);
            let first = read_until(&mut body, "\n\n", Duration::from_secs(10)).await;
            assert!(first.starts_with("event: envelope"), "{first:.200}");
            streams.push(body);
        }
        let (status, mut page) = get(&send, port, "/", true).await;
        assert_eq!(status, 200, "the page beside eight open streams");
        assert!(read_until(&mut page, "</html>", Duration::from_secs(10)).await.contains("</html>"));

        // Every stream follows a change.
        fx.exec("INSERT INTO jobs (agent, status) VALUES ('developer', 'queued');");
        for (n, body) in streams.iter_mut().enumerate() {
            let event = read_until(body, "\"section\":\"queue\"", Duration::from_secs(15)).await;
            assert!(event.contains("\"section\":\"queue\""), "stream {n} follows the change: {event:.300}");
        }
    });
    stop(child);
}

#[test]
fn with_http2_false_tls_offers_http1_only() {
    let fx = Fixture::one_of_each();
    let ca = Ca::new();
    ca.server_files(fx.dir.path());
    let config = web_config(fx.dir.path(), "http_server_config:\n  http2: false\n");
    let port = support::free_port();
    let child = start(&fx, &config, port);
    let chosen = runtime().block_on(async {
        wait_for(Duration::from_secs(20), "the mirror over TLS", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok().then_some(())
        });
        tls(port, &ca).await.expect("a TLS connection").1
    });
    assert_eq!(chosen, b"http/1.1", "{}", String::from_utf8_lossy(&chosen));
    stop(child);
}
