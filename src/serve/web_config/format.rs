//! The web configuration file's format (the exporter-toolkit's, plus
//! `authenticate_livez`), as read before it is checked.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::serve::tls::TlsServerConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileFormat {
    pub(super) tls_server_config: Option<TlsServerConfig>,
    pub(super) http_server_config: Option<HttpServerConfig>,
    pub(super) basic_auth_users: Option<BTreeMap<String, String>>,
    pub(super) rate_limit: Option<serde_yaml_ng::Value>,
    /// This server's addition: whether `/livez` requires a user too.
    pub(super) authenticate_livez: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpServerConfig {
    /// Whether TLS connections may speak HTTP/2 (ALPN `h2`); the exporter-toolkit's default is true.
    pub(super) http2: Option<bool>,
    pub(super) headers: Option<BTreeMap<String, String>>,
}
