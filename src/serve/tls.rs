//! TLS from the web configuration file's `tls_server_config` (the
//! exporter-toolkit's keys and meaning), through rustls (actix-web's own
//! `rustls-0_23` feature, ring provider).
//!
//! Supported: the certificate and key (`cert_file`/`key_file`, or inline
//! `cert`/`key`), `client_auth_type` `NoClientCert` (default),
//! `VerifyClientCertIfGiven` and `RequireAndVerifyClientCert` with
//! `client_ca_file` (or inline `client_ca`) for mutual TLS, and
//! `min_version`/`max_version` `TLS12`/`TLS13`. The certificate, key and
//! client CA are read again when any of their files (or the configuration
//! file) changes, at the next handshake or request at most a second later,
//! so a rotation needs no restart; the versions apply from start-up (a change
//! is logged as needing a restart). Anything else (`cipher_suites`,
//! `curve_preferences`, `client_allowed_sans`, `RequireAnyClientCert`,
//! `RequestClientCert`, TLS 1.0/1.1) is an error naming the key or value:
//! rustls does not offer it, or not safely.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::Deserialize;

/// `tls_server_config`, as the toolkit spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsServerConfig {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

/// A loaded TLS configuration.
pub(crate) struct Tls {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) verifier: Arc<dyn ClientCertVerifier>,
    /// TLS 1.2 and TLS 1.3 allowed, in that order.
    pub(crate) versions: (bool, bool),
    /// The files it was read from (watched for changes).
    pub(crate) files: Vec<PathBuf>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("versions", &self.versions).field("files", &self.files).finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A version name as the toolkit spells it: `Some(true)` TLS 1.3, `Some(false)` TLS 1.2.
fn version(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "TLS13" => Ok(true),
        "TLS12" => Ok(false),
        "TLS10" | "TLS11" => {
            Err(format!("tls_server_config.{key}: {v} is not supported (rustls offers TLS12 and TLS13)"))
        }
        _ => Err(format!("tls_server_config.{key}: {v:?} is not a version (TLS12 or TLS13)")),
    }
}

impl TlsServerConfig {
    /// Reads the certificates and key it names; relative paths are relative
    /// to `base` (the configuration file's directory), as the toolkit does.
    pub(crate) fn load(&self, base: &Path) -> Result<Tls, String> {
        let unsupported = |key: &str| format!("tls_server_config.{key} is not supported by this server");
        if self.cipher_suites.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(unsupported("cipher_suites"));
        }
        if self.curve_preferences.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(unsupported("curve_preferences"));
        }
        if self.client_allowed_sans.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(unsupported("client_allowed_sans"));
        }
        let _ = self.prefer_server_cipher_suites; // rustls always prefers the server's order.
        let mut files = Vec::new();
        let mut pem =
            |inline: &Option<String>, file: &Option<PathBuf>, what: &str| -> Result<Option<Vec<u8>>, String> {
                match (inline, file) {
                    (Some(_), Some(_)) => Err(format!("tls_server_config: give {what} or {what}_file, not both")),
                    (Some(text), None) => Ok(Some(text.as_bytes().to_vec())),
                    (None, Some(path)) => {
                        let path = base.join(path);
                        let bytes = read_small(&path).map_err(|e| format!("tls_server_config.{what}_file: {e}"))?;
                        files.push(path);
                        Ok(Some(bytes))
                    }
                    (None, None) => Ok(None),
                }
            };
        let cert =
            pem(&self.cert, &self.cert_file, "cert")?.ok_or("tls_server_config: cert_file (or cert) is required")?;
        let key = pem(&self.key, &self.key_file, "key")?.ok_or("tls_server_config: key_file (or key) is required")?;
        let ca = pem(&self.client_ca, &self.client_ca_file, "client_ca")?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls_server_config.cert: {e}"))?;
        if certs.is_empty() {
            return Err("tls_server_config.cert: no certificate in it".into());
        }
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("tls_server_config.key: {e}"))?;
        let signer =
            provider().key_provider.load_private_key(key).map_err(|e| format!("tls_server_config.key: {e}"))?;
        let certified = CertifiedKey::new(certs, signer);
        if let Err(e) = certified.keys_match() {
            return Err(format!("tls_server_config: the key does not belong to the certificate ({e})"));
        }
        let auth = self.client_auth_type.as_deref().unwrap_or("NoClientCert");
        let roots = |ca: &Option<Vec<u8>>| -> Result<Arc<rustls::RootCertStore>, String> {
            let ca = ca
                .as_ref()
                .ok_or_else(|| format!("tls_server_config: client_auth_type {auth} needs client_ca_file"))?;
            let mut store = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| format!("tls_server_config.client_ca: {e}"))?;
                store.add(c).map_err(|e| format!("tls_server_config.client_ca: {e}"))?;
            }
            if store.is_empty() {
                return Err("tls_server_config.client_ca: no certificate in it".into());
            }
            Ok(Arc::new(store))
        };
        let verifier: Arc<dyn ClientCertVerifier> = match auth {
            "NoClientCert" => WebPkiClientVerifier::no_client_auth(),
            "RequireAndVerifyClientCert" => WebPkiClientVerifier::builder_with_provider(roots(&ca)?, provider())
                .build()
                .map_err(|e| format!("tls_server_config.client_ca: {e}"))?,
            "VerifyClientCertIfGiven" => WebPkiClientVerifier::builder_with_provider(roots(&ca)?, provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls_server_config.client_ca: {e}"))?,
            "RequestClientCert" | "RequireAnyClientCert" => {
                return Err(format!(
                    "tls_server_config.client_auth_type: {auth} (a certificate nobody verifies) is not supported; \
                     use RequireAndVerifyClientCert"
                ));
            }
            other => return Err(format!("tls_server_config.client_auth_type: {other:?} is not a client auth type")),
        };
        let min = self.min_version.as_deref().map(|v| version("min_version", v)).transpose()?.unwrap_or(false);
        let max = self.max_version.as_deref().map(|v| version("max_version", v)).transpose()?.unwrap_or(true);
        if min && !max {
            return Err("tls_server_config: min_version is above max_version".into());
        }
        Ok(Tls { key: Arc::new(certified), verifier, versions: (!min, max), files })
    }
}

/// A PEM file of at most 1 MiB, a regular file.
fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() > 1024 * 1024 {
        return Err(format!("{}: not a regular file of at most 1 MiB", path.display()));
    }
    let mut out = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1024 * 1024).read_to_end(&mut out))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(out)
}

/// Where the server's handshakes get the certificate and client verifier in force.
pub(crate) trait TlsSource: Send + Sync + std::fmt::Debug {
    /// The TLS configuration in force (after looking for changed files when due).
    fn tls(&self) -> Option<Arc<Tls>>;
}

/// The certificate of the configuration in force, at each handshake.
#[derive(Debug)]
struct Resolver(Arc<dyn TlsSource>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.tls().map(|t| Arc::clone(&t.key))
    }
}

/// The client verifier of the configuration in force, at each handshake.
#[derive(Debug)]
struct Verifier(Arc<dyn TlsSource>);

impl Verifier {
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.0.tls().map_or_else(WebPkiClientVerifier::no_client_auth, |t| Arc::clone(&t.verifier))
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; the CA in force can change, so none are sent.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// The rustls server configuration for `source` (whose configuration in
/// force has TLS): the versions of `tls`, the certificate and client
/// verifier looked up at each handshake.
pub(crate) fn server_config(
    source: Arc<dyn TlsSource>,
    tls: &Tls,
    http2: bool,
) -> Result<rustls::ServerConfig, String> {
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if tls.versions.1 {
        versions.push(&rustls::version::TLS13);
    }
    if tls.versions.0 {
        versions.push(&rustls::version::TLS12);
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(Arc::new(Verifier(Arc::clone(&source))))
        .with_cert_resolver(Arc::new(Resolver(source)));
    // HTTP/2 first when allowed (http_server_config.http2): every tab, stream
    // and scrape of one client then shares one connection. The vendored
    // actix-http keeps a list given here (orchmirror patch).
    config.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(config)
}
