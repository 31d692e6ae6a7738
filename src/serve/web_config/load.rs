//! Reading and checking the file: every key the exporter-toolkit's format
//! has, each error naming the key (or the problem) and the file.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};

use super::dummy::dummy_hash;
use super::format::FileFormat;
use super::{HEADERS, MAX_BCRYPT_COST, MAX_FILE_BYTES, WebConfig};

impl WebConfig {
    /// Reads and checks the file at `path`; the error names the key (or the
    /// problem) and the file.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{shown} is not a regular file"));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(format!("{shown} is larger than {MAX_FILE_BYTES} bytes"));
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| format!("{shown}: {e}"))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| format!("{shown}: {e}"))
    }

    /// Checks a web configuration's text; files it names are relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<WebConfig, String> {
        if text.trim().is_empty() {
            return Ok(WebConfig::default());
        }
        let file: FileFormat = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let tls = file.tls_server_config.map(|t| t.load(base)).transpose()?.map(Arc::new);
        if file.rate_limit.is_some() {
            return Err("rate_limit is not supported by this server yet; remove it".into());
        }
        let mut headers = Vec::new();
        let mut http2 = None;
        if let Some(http) = file.http_server_config {
            http2 = http.http2;
            for (name, value) in http.headers.unwrap_or_default() {
                let Some(known) = HEADERS.iter().find(|h| h.eq_ignore_ascii_case(&name)) else {
                    return Err(format!(
                        "http_server_config.headers.{name} is not one of the headers it may set ({})",
                        HEADERS.join(", ")
                    ));
                };
                if value.is_empty() {
                    continue; // "Unset if blank."
                }
                let value = HeaderValue::from_str(&value)
                    .map_err(|_| format!("http_server_config.headers.{name}: not a valid header value"))?;
                headers.push((HeaderName::from_static(static_lower(known)), value));
            }
        }
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.contains(':') || user.is_empty() {
                return Err(format!("basic_auth_users: {user:?} cannot be a Basic user name (empty, or with ':')"));
            }
            let Ok(parts) = hash.parse::<bcrypt::HashParts>() else {
                return Err(format!("basic_auth_users.{user}: not a bcrypt hash (htpasswd -nBC 10 \"\" makes one)"));
            };
            if parts.get_cost() > MAX_BCRYPT_COST {
                return Err(format!(
                    "basic_auth_users.{user}: bcrypt cost {} is above {MAX_BCRYPT_COST}, the most the mirror \
                     checks (each check of cost {} takes about {} s of a core; 10 to 12 is usual)",
                    parts.get_cost(),
                    parts.get_cost(),
                    1u64 << parts.get_cost().saturating_sub(12).min(40) >> 2,
                ));
            }
        }
        let cost = users.values().filter_map(|h| h.parse::<bcrypt::HashParts>().ok()).map(|p| p.get_cost()).max();
        let dummy = dummy_hash(cost.unwrap_or(bcrypt::DEFAULT_COST));
        let authenticate_livez = file.authenticate_livez.unwrap_or(false);
        Ok(WebConfig { users, headers, authenticate_livez, tls, http2, dummy })
    }
}

/// The header's name in lower case, as `HeaderName::from_static` wants it.
fn static_lower(name: &str) -> &'static str {
    match name {
        "Content-Security-Policy" => "content-security-policy",
        "X-Frame-Options" => "x-frame-options",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "strict-transport-security",
    }
}
