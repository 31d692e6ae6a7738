//! Settings: defaults, an optional TOML file, `ORCH_*` environment variables
//! and command-line flags, later layers winning, then validated as a whole.
//!
//! Every value is read as text and parsed here, so an error can always name
//! the variable, the value and where it came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};

mod kinds;
pub mod table;
mod values;

pub(crate) use values::resolve_bind;
#[cfg(test)]
pub(crate) use values::valid_host_name;
pub use values::{LogFormat, unix_socket_path};

mod error;
mod periods;

pub use error::ConfigError;
pub use periods::RefreshPeriods;
use periods::section_period_key;
pub use table::Settings;
use table::Spec;

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CliOverrides {
    /// `--db`.
    pub db: Option<PathBuf>,
    /// `--bind`.
    pub bind: Option<String>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// Any other setting given as a flag: its configuration key (the
    /// variable without `ORCH_`, lower case) and the text given; the flag is
    /// `--` and the key with `-` for `_` (`--refresh-ms`).
    pub settings: Vec<(String, String)>,
    /// The dotenv file that set some of the environment's `ORCH_*`
    /// variables, and which (by variable name): errors name the file.
    pub dotenv: Option<(String, Vec<String>)>,
}

impl CliOverrides {
    /// Overrides from the three path and address flags.
    pub fn new(db: Option<PathBuf>, bind: Option<String>, config: Option<PathBuf>) -> Self {
        Self { db, bind, config, settings: Vec::new(), dotenv: None }
    }

    /// This with `variables` (`ORCH_*` names) coming from the dotenv file at `path`.
    pub fn with_dotenv(mut self, path: impl Into<String>, variables: Vec<String>) -> Self {
        self.dotenv = Some((path.into(), variables));
        self
    }

    /// This with the setting `key` (for example `refresh_ms`) given as `value` on the command line.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.settings.push((key.to_owned(), value.into()));
        self
    }
}

/// Whether `key` may be in a configuration file: a setting's key, or
/// `<section>_refresh_ms` for any section (checked against the registered
/// sections when the mirror starts).
fn known_key(key: &str) -> bool {
    table::by_key(key).is_some() || section_period_key(key).is_some()
}

impl Settings {
    /// Loads defaults, then the TOML file (`--config` or `ORCH_CONFIG_FILE`), then
    /// `env` (only `ORCH_*` entries matter), then `cli`; validates the result.
    pub fn load<I>(env: I, cli: &CliOverrides) -> Result<Settings, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let env: HashMap<String, String> = env.into_iter().filter(|(k, _)| k.starts_with("ORCH_")).collect();

        let env_keys: Vec<String> =
            env.keys().filter_map(|k| k.strip_prefix("ORCH_")).map(str::to_ascii_lowercase).collect();
        let mut file_keys = Vec::new();
        let mut builder = Config::builder();
        let file = match (&cli.config, env.get("ORCH_CONFIG_FILE")) {
            (Some(path), _) => Some((path.display().to_string(), "--config")),
            (None, Some(path)) => Some((path.clone(), "ORCH_CONFIG_FILE")),
            (None, None) => None,
        };
        if let Some((path, source_name)) = &file {
            let file_err = |reason: String| ConfigError::File { path: path.clone(), source_name, reason };
            if path.is_empty() {
                return Err(file_err("the path is empty".into()));
            }
            let text = match read_settings_file(Path::new(path)) {
                Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|e| file_err(format!("not UTF-8: {e}")))?,
                Ok(None) => return Err(file_err("no such file".into())),
                Err(e) => return Err(file_err(e)),
            };
            let only_file = Config::builder()
                .add_source(File::from_str(&text, FileFormat::Toml))
                .build()
                .map_err(|e| file_err(e.to_string()))?;
            let table =
                only_file.try_deserialize::<HashMap<String, config::Value>>().map_err(|e| file_err(e.to_string()))?;
            if let Some(key) = table.keys().find(|k| !known_key(k)) {
                let keys: Vec<&str> = table::SETTINGS.iter().map(|r| r.key()).collect();
                let known = format!("{}, <section>_refresh_ms", keys.join(", "));
                return Err(ConfigError::UnknownKey { key: key.clone(), path: path.clone(), known });
            }
            file_keys = table.into_keys().collect();
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
        }
        builder = builder
            .add_source(Environment::with_prefix("ORCH").prefix_separator("_").source(Some(env.into_iter().collect())));
        let mut cli_keys = Vec::new();
        if let Some(db) = &cli.db {
            builder = set_override(builder, "db_path", db.display().to_string())?;
            cli_keys.push("db_path".to_owned());
        }
        if let Some(bind) = &cli.bind {
            builder = set_override(builder, "bind", bind.clone())?;
            cli_keys.push("bind".to_owned());
        }
        for (key, value) in &cli.settings {
            if !known_key(key) || key == "db_path" || key == "bind" {
                return Err(ConfigError::Invalid {
                    var: cli_flag(key),
                    value: value.clone(),
                    origin: " (from the command line)".into(),
                    expected: "a known setting".into(),
                });
            }
            builder = set_override(builder, key, value.clone())?;
            cli_keys.push(key.clone());
        }
        let merged = builder.build().map_err(|e| ConfigError::File {
            path: file.as_ref().map(|f| f.0.clone()).unwrap_or_default(),
            source_name: file.as_ref().map(|f| f.1).unwrap_or("ORCH_CONFIG_FILE"),
            reason: e.to_string(),
        })?;
        let file_path = file.map(|f| f.0).unwrap_or_default();
        let (dotenv_path, dotenv_keys) = match &cli.dotenv {
            Some((path, vars)) => (
                path.as_str(),
                vars.iter().filter_map(|v| v.strip_prefix("ORCH_")).map(str::to_ascii_lowercase).collect(),
            ),
            None => ("", Vec::new()),
        };
        Layers {
            merged: &merged,
            cli_keys: &cli_keys,
            env_keys: &env_keys,
            file_keys: &file_keys,
            file_path: &file_path,
            dotenv_keys: &dotenv_keys,
            dotenv_path,
        }
        .settings()
    }
}

fn set_override(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    key: &str,
    value: String,
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, ConfigError> {
    builder.set_override(key, value.clone()).map_err(|e| ConfigError::Invalid {
        var: cli_flag(key),
        value,
        origin: " (from the command line)".into(),
        expected: e.to_string(),
    })
}

/// The flag that sets `key`: the setting's, else `--` and the key with `-`
/// for `_` (a section's refresh period).
fn cli_flag(key: &str) -> String {
    match table::by_key(key) {
        Some(row) => format!("--{}", row.flag()),
        None => format!("--{}", key.replace('_', "-")),
    }
}

/// The merged layers, read one key at a time with errors that say where a value came from.
struct Layers<'a> {
    merged: &'a Config,
    cli_keys: &'a [String],
    env_keys: &'a [String],
    file_keys: &'a [String],
    file_path: &'a str,
    /// Environment keys whose value came from the dotenv file at `dotenv_path`.
    dotenv_keys: &'a [String],
    dotenv_path: &'a str,
}

impl Layers<'_> {
    fn settings(&self) -> Result<Settings, ConfigError> {
        let mut settings = Settings::read(self)?;
        let mut keys: Vec<&str> =
            self.env_keys.iter().chain(self.file_keys).chain(self.cli_keys).map(String::as_str).collect();
        keys.sort_unstable();
        keys.dedup();
        for (key, section) in keys.into_iter().filter_map(|k| Some((k, section_period_key(k)?))) {
            if let Some(period) = self.given(key, &table::REFRESH.kind)? {
                settings.refresh.set(section, period);
            }
        }
        Ok(settings)
    }

    /// The setting's value: as a layer gave it, else its default.
    fn get<K: kinds::Kind>(&self, spec: &Spec<K>) -> Result<K::Value, ConfigError> {
        Ok(self.given(spec.key, &spec.kind)?.unwrap_or_else(|| spec.default.clone()))
    }

    /// The value of `key` read as `kind`, if a layer set it; an error names
    /// the variable, the value, where it came from and what was expected.
    fn given<K: kinds::Kind>(&self, key: &str, kind: &K) -> Result<Option<K::Value>, ConfigError> {
        match self.raw(key)? {
            None => Ok(None),
            Some(raw) => match kind.parse(raw.trim()) {
                Ok(v) => Ok(Some(v)),
                Err(expected) => Err(self.invalid(key, raw, expected)),
            },
        }
    }

    /// The raw text of `key`, if any layer set it.
    fn raw(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let value = match self.merged.get::<config::Value>(key) {
            Ok(v) => v,
            Err(config::ConfigError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(self.invalid(key, String::new(), e.to_string())),
        };
        match value.into_string() {
            Ok(s) => Ok(Some(s)),
            Err(e) => Err(self.invalid(key, String::new(), e.to_string())),
        }
    }

    /// An error naming the variable (or flag), the value and the layer it came from.
    fn invalid(&self, key: &str, value: String, expected: String) -> ConfigError {
        let from_cli = self.cli_keys.iter().any(|k| k == key);
        let var = if from_cli { cli_flag(key) } else { format!("ORCH_{}", key.to_uppercase()) };
        let origin = if from_cli {
            " (from the command line)".to_owned()
        } else if self.dotenv_keys.iter().any(|k| k == key) {
            format!(" (from {})", self.dotenv_path)
        } else if self.env_keys.iter().any(|k| k == key) {
            " (from the environment)".to_owned()
        } else if self.file_keys.iter().any(|k| k == key) {
            format!(" (key {key:?} in {})", self.file_path)
        } else {
            String::new()
        };
        ConfigError::Invalid { var, value, origin, expected }
    }
}

/// The most bytes a settings file (the TOML file, a dotenv file) may hold.
pub const MAX_SETTINGS_FILE_BYTES: u64 = 1024 * 1024;

/// A settings file's bytes: only a regular file (a FIFO would block start-up,
/// a device such as `/dev/zero` never ends), of at most
/// [`MAX_SETTINGS_FILE_BYTES`]. `Ok(None)` when nothing is at the path.
pub fn read_settings_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let shown = path.display();
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Opened without blocking (a FIFO would wait for a writer), then judged
    // by what was opened, so nothing can be swapped in between.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(nix::libc::O_NONBLOCK);
    }
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{shown} is not a regular file (a FIFO, a device or a directory); settings are read only from regular files"
        ));
    }
    if meta.len() > MAX_SETTINGS_FILE_BYTES {
        return Err(format!("{shown} is larger than {MAX_SETTINGS_FILE_BYTES} bytes; it cannot be a settings file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SETTINGS_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("{shown}: {e}"))?;
    if bytes.len() as u64 > MAX_SETTINGS_FILE_BYTES {
        return Err(format!("{shown} is larger than {MAX_SETTINGS_FILE_BYTES} bytes; it cannot be a settings file"));
    }
    Ok(Some(bytes))
}
