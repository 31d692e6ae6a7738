//! TLS from the web configuration file's `tls_server_config` (README,
//! "Running beyond loopback: who may read"): the server speaks only TLS, with the certificate it names;
//! mutual TLS with a client CA; a minimum version; a rotated certificate is
//! served without a restart. Real certificates (rcgen: a CA, server and
//! client certificates), a real rustls client, the real binary.

use crate::support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{Binary, Fixture, wait_for};

/// A test CA that issues server and client certificates.
pub(super) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    pub(super) fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "orchmirror test CA");
        let pem = params.self_signed(&key).expect("CA cert").pem();
        Ca { issuer: Issuer::new(params, key), pem }
    }

    /// A certificate for `names` with `usage`: its PEM and its key's PEM.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate for localhost issued now, written with its key
    /// and this CA to `server.crt`, `server.key` and `ca.crt` in `dir`.
    pub(super) fn server_files(&self, dir: &Path) {
        let (cert, key) = self.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        for (name, pem) in [("server.crt", &cert), ("server.key", &key), ("ca.crt", &self.pem)] {
            std::fs::write(dir.join(name), pem).expect("write");
        }
    }

    pub(super) fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA pem")).expect("add");
        roots
    }
}

/// One HTTPS request to 127.0.0.1:`port` as "localhost": the status (0 when
/// the connection failed) and the server certificate it presented.
fn https_get(
    port: u16,
    roots: &rustls::RootCertStore,
    client: Option<&(String, String)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (u16, Option<Vec<u8>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots.clone());
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let Ok(mut sock) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, None) };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    if tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return (0, None);
    }
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf); // a peer that closes without close_notify still gave its answer
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let peer = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
    (status, peer)
}

pub(super) fn start(fx: &Fixture, config: &Path, port: u16) -> Child {
    Binary::command(&[
        ("ORCH_DB_PATH", &fx.path.display().to_string()),
        ("ORCH_BIND", &format!("127.0.0.1:{port}")),
        ("ORCH_WEB_CONFIG_FILE", &config.display().to_string()),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn")
}

pub(super) fn stop(mut child: Child) {
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

#[test]
fn the_server_speaks_tls_with_its_certificate_and_picks_up_a_rotated_one() {
    let fx = Fixture::one_of_each();
    let ca = Ca::new();
    ca.server_files(fx.dir.path());
    let config = fx.dir.path().join("web.yml");
    // Relative paths are relative to the configuration file, as the toolkit reads them.
    std::fs::write(&config, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n").expect("write");
    let port = support::free_port();
    let child = start(&fx, &config, port);
    let (status, first) = wait_for(Duration::from_secs(20), "an HTTPS answer", || {
        Some(https_get(port, &ca.roots(), None, BOTH)).filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
    assert!(first.is_some(), "a certificate was presented");
    // TLS 1.2 and 1.3 are both accepted by default.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        assert_eq!(https_get(port, &ca.roots(), None, &[version]).0, 200, "{version:?}");
    }

    // Plain HTTP on the TLS port gets no answer.
    let plain = support::client().get(format!("http://127.0.0.1:{port}/metrics")).send();
    assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true), "plain HTTP is not served");

    // Rotation: a new certificate in the same files, no restart.
    let (cert2, key2) = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(fx.dir.path().join("server.key"), &key2).expect("write");
    std::fs::write(fx.dir.path().join("server.crt"), &cert2).expect("write");
    wait_for(Duration::from_secs(10), "the rotated certificate", || {
        let (status, peer) = https_get(port, &ca.roots(), None, BOTH);
        (status == 200 && peer != first).then_some(())
    });
    stop(child);
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca_and_min_version_holds() {
    let fx = Fixture::one_of_each();
    let ca = Ca::new();
    let dir = fx.dir.path();
    ca.server_files(dir);
    let config = dir.join("web.yml");
    std::fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  \
             client_ca_file: ca.crt\n  min_version: TLS13\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        ),
    )
    .expect("write");
    let port = support::free_port();
    let child = start(&fx, &config, port);
    let client = ca.issue(&["prometheus"], ExtendedKeyUsagePurpose::ClientAuth);
    wait_for(Duration::from_secs(20), "an answer to the client with a certificate", || {
        (https_get(port, &ca.roots(), Some(&client), BOTH).0 == 200).then_some(())
    });
    assert_ne!(https_get(port, &ca.roots(), None, BOTH).0, 200, "no client certificate, no answer");
    let stranger = Ca::new().issue(&["mallory"], ExtendedKeyUsagePurpose::ClientAuth);
    assert_ne!(https_get(port, &ca.roots(), Some(&stranger), BOTH).0, 200, "a certificate from another CA");
    let tls12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    assert_ne!(https_get(port, &ca.roots(), Some(&client), tls12).0, 200, "TLS 1.2 below min_version");
    stop(child);
}

/// Plain HTTP sent to the TLS port gets a plain `400` saying the server
/// speaks HTTPS (as Go's servers answer), not bytes the client cannot read
/// ("Received HTTP/0.9 when not allowed"); TLS on the same port still works.
#[test]
fn plain_http_to_the_tls_port_gets_a_400_that_says_https() {
    let fx = Fixture::one_of_each();
    let ca = Ca::new();
    let dir = fx.dir.path();
    ca.server_files(dir);
    let config = dir.join("web.yml");
    std::fs::write(&config, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n").expect("write");
    let port = support::free_port();
    let child = start(&fx, &config, port);
    wait_for(Duration::from_secs(20), "the mirror over TLS", || {
        (https_get(port, &ca.roots(), None, BOTH).0 == 200).then_some(())
    });
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
    let mut answer = String::new();
    let _ = sock.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"), "{answer:?}");
    assert_eq!(https_get(port, &ca.roots(), None, BOTH).0, 200, "TLS clients are served as before");
    stop(child);
}

#[test]
fn a_bad_tls_configuration_is_a_start_up_error_naming_the_key() {
    let fx = Fixture::one_of_each();
    let ca = Ca::new();
    let (_, other_key) = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let dir = fx.dir.path();
    ca.server_files(dir);
    std::fs::write(dir.join("other.key"), &other_key).expect("write");
    for (text, expected) in [
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n", "does not belong"),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: other.key\n", "cert_file"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS10\n", "min_version"),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAnyClientCert\n",
            "client_auth_type",
        ),
    ] {
        let config = dir.join("bad.yml");
        std::fs::write(&config, text).expect("write");
        let out = Binary::command(&[
            ("ORCH_DB_PATH", &fx.path.display().to_string()),
            ("ORCH_WEB_CONFIG_FILE", &config.display().to_string()),
        ])
        .output()
        .expect("run");
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{text}: {err}");
    }
}

/// A real Prometheus scrapes `/metrics/prometheus` over TLS with basic auth
/// and the test CA, and stores the series; a job with a wrong password is
/// down with a 401.
#[test]
fn a_real_prometheus_scrapes_over_tls_with_basic_auth() {
    let Some(prometheus) = support::system_tool("prometheus") else { return };
    let fx = Fixture::one_of_each();
    let ca = Ca::new();
    let dir = fx.dir.path();
    ca.server_files(dir);
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let config = dir.join("web.yml");
    std::fs::write(
        &config,
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"),
    )
    .expect("write");
    let port = support::free_port();
    let child = start(&fx, &config, port);
    wait_for(Duration::from_secs(20), "the mirror over TLS", || {
        (https_get(port, &ca.roots(), None, BOTH).0 == 401).then_some(())
    });

    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    metrics_path: /metrics/prometheus\n    tls_config:\n      \
             ca_file: {ca}\n      server_name: localhost\n    enable_http2: true\n    basic_auth:\n      username: prometheus\n      \
             password: {password}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            ca = dir.join("ca.crt").display()
        )
    };
    let prom_config = dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}", job("right", "s3cret"), job("wrong", "guess")),
    )
    .expect("write");
    let prom_port = support::free_port();
    let mut prom = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let api = |path: &str| -> Option<serde_json::Value> {
        support::client().get(format!("http://127.0.0.1:{prom_port}{path}")).send().ok()?.json().ok()
    };
    let stored = support::wait_for_or_none(Duration::from_secs(60), || {
        let v = api("/api/v1/query?query=orch_queue_depth%7Bjob%3D%22right%22%7D")?;
        v["data"]["result"].as_array().filter(|r| !r.is_empty()).map(|_| ())
    });
    let wrong_target = || {
        api("/api/v1/targets").and_then(|t| {
            t["data"]["activeTargets"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["labels"]["job"] == "wrong"))
                .cloned()
        })
    };
    let wrong =
        support::wait_for_or_none(Duration::from_secs(60), || wrong_target().filter(|t| t["health"] != "unknown"))
            .unwrap_or_default();
    let _ = prom.kill();
    let _ = prom.wait();
    stop(child);
    assert!(stored.is_some(), "Prometheus stored orch_queue_depth over TLS with basic auth");
    assert_eq!(wrong["health"], "down", "{wrong}");
    assert!(wrong["lastError"].as_str().is_some_and(|e| e.contains("401")), "{wrong}");
}
