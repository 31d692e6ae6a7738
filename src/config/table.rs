//! Every setting, declared once: its configuration key, variable, flag,
//! default, accepted values and one line of meaning. The flags and `--help`
//! (the binary), the loader ([`super::Settings::load`]), the configuration
//! file's key check and the test that compares `.env.example` and README's
//! table with it all read [`SETTINGS`].
//!
//! A new setting is one `Spec` here, listed in [`SETTINGS`], and the
//! [`super::Settings`] field it fills (which names the spec for its default
//! and its value).

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::values::{LogFormat, resolve_bind, unix_socket_path, valid_host_name};

/// How a setting's text is read: what it becomes, what is accepted, how a
/// value is written back.
pub(crate) trait Kind: Sync {
    /// The value a setting of this kind holds.
    type Value: Clone + Sync;
    /// The value `text` (trimmed) gives, or what was expected instead.
    fn parse(&self, text: &str) -> Result<Self::Value, String>;
    /// What the documentation says of the default when it is not a value.
    fn unset(&self) -> &'static str {
        "unset"
    }
    /// The accepted range, for `--help` (`1000 .. 3600000`), when there is one.
    fn range(&self) -> Option<String> {
        None
    }
    /// `value` as a user would write it; `None` for "unset".
    fn show(&self, value: &Self::Value) -> Option<String>;
}

/// One setting.
#[derive(Debug)]
pub(crate) struct Spec<K: Kind> {
    /// The configuration file's key; the variable is `ORCH_` and the key in upper case.
    pub key: &'static str,
    /// The environment variable.
    pub var: &'static str,
    /// The command-line flag, without `--`.
    pub flag: &'static str,
    /// What the flag's value is called in `--help`.
    pub value_name: &'static str,
    /// One line of meaning, for `--help`.
    pub meaning: &'static str,
    /// How the text is read.
    pub kind: K,
    /// The value when no layer sets it.
    pub default: K::Value,
}

/// What the flags, `--help` and the documentation checks need of a setting,
/// whatever its kind.
pub trait Row: Sync {
    /// The configuration file's key; the variable is `ORCH_` and the key in upper case.
    fn key(&self) -> &'static str;
    /// The environment variable.
    fn var(&self) -> &'static str;
    /// The command-line flag, without `--`.
    fn flag(&self) -> &'static str;
    /// What the flag's value is called in `--help`.
    fn value_name(&self) -> &'static str;
    /// One line of meaning, for `--help`.
    fn meaning(&self) -> &'static str;
    /// The default as text; `None` when unset by default.
    fn default_text(&self) -> Option<String>;
    /// What the documentation says of the default when it is not a value
    /// (`unset`, or how it is derived).
    fn unset(&self) -> &'static str;
    /// The accepted range, when there is one.
    fn range(&self) -> Option<String>;
    /// Whether `text` is accepted; the error says what was expected.
    fn check(&self, text: &str) -> Result<(), String>;
}

impl<K: Kind> Row for Spec<K> {
    fn key(&self) -> &'static str {
        self.key
    }
    fn var(&self) -> &'static str {
        self.var
    }
    fn flag(&self) -> &'static str {
        self.flag
    }
    fn value_name(&self) -> &'static str {
        self.value_name
    }
    fn meaning(&self) -> &'static str {
        self.meaning
    }
    fn default_text(&self) -> Option<String> {
        self.kind.show(&self.default)
    }
    fn unset(&self) -> &'static str {
        self.kind.unset()
    }
    fn range(&self) -> Option<String> {
        self.kind.range()
    }
    fn check(&self, text: &str) -> Result<(), String> {
        self.kind.parse(text.trim()).map(|_| ())
    }
}

/// A whole number of milliseconds within bounds.
#[derive(Debug)]
pub(crate) struct Millis(pub u64, pub u64);

impl Kind for Millis {
    type Value = Duration;
    fn parse(&self, text: &str) -> Result<Duration, String> {
        let Millis(lo, hi) = *self;
        text.parse::<u64>()
            .ok()
            .filter(|ms| (lo..=hi).contains(ms))
            .map(Duration::from_millis)
            .ok_or_else(|| format!("expected a whole number of milliseconds from {lo} to {hi}"))
    }
    fn range(&self) -> Option<String> {
        Some(format!("{} .. {}", self.0, self.1))
    }
    fn show(&self, value: &Duration) -> Option<String> {
        Some(value.as_millis().to_string())
    }
}

/// A number of seconds (fractions allowed) from 0 to a bound.
#[derive(Debug)]
pub(crate) struct Seconds(pub f64);

impl Kind for Seconds {
    type Value = Duration;
    fn parse(&self, text: &str) -> Result<Duration, String> {
        let max = self.0;
        text.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && (0.0..=max).contains(x))
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("expected a number of seconds from 0 to {max}"))
    }
    fn range(&self) -> Option<String> {
        Some(format!("0 .. {}", self.0))
    }
    fn show(&self, value: &Duration) -> Option<String> {
        Some(value.as_secs_f64().to_string())
    }
}

/// A whole number within bounds.
#[derive(Debug)]
pub(crate) struct Count(pub u64, pub u64);

impl Kind for Count {
    type Value = usize;
    fn parse(&self, text: &str) -> Result<usize, String> {
        let Count(lo, hi) = *self;
        text.parse::<u64>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("expected a whole number from {lo} to {hi}"))
    }
    fn range(&self) -> Option<String> {
        Some(format!("{} .. {}", self.0, self.1))
    }
    fn show(&self, value: &usize) -> Option<String> {
        Some(value.to_string())
    }
}

/// A share of one core in percent, a decimal number within bounds.
#[derive(Debug)]
pub(crate) struct Percent(pub f64, pub f64);

impl Kind for Percent {
    type Value = f64;
    fn parse(&self, text: &str) -> Result<f64, String> {
        let Percent(lo, hi) = *self;
        text.parse::<f64>()
            .ok()
            .filter(|p| p.is_finite() && (lo..=hi).contains(p))
            .ok_or_else(|| format!("expected a percentage of one core from {lo} to {hi}"))
    }
    fn range(&self) -> Option<String> {
        Some(format!("{} .. {}", self.0, self.1))
    }
    fn show(&self, value: &f64) -> Option<String> {
        Some(value.to_string())
    }
}

/// A whole number within bounds, or by default one derived when the server starts.
#[derive(Debug)]
pub(crate) struct Derived(pub Count, pub &'static str);

impl Kind for Derived {
    type Value = Option<usize>;
    fn parse(&self, text: &str) -> Result<Option<usize>, String> {
        self.0.parse(text).map(Some)
    }
    fn unset(&self) -> &'static str {
        self.1
    }
    fn range(&self) -> Option<String> {
        self.0.range()
    }
    fn show(&self, value: &Option<usize>) -> Option<String> {
        value.map(|n| n.to_string())
    }
}

/// On or off: `true/false/1/0/yes/no/on/off`, any case.
#[derive(Debug)]
pub(crate) struct Switch;

impl Kind for Switch {
    type Value = bool;
    fn parse(&self, text: &str) -> Result<bool, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("expected one of true/false/1/0/yes/no/on/off (any case)".to_owned()),
        }
    }
    fn show(&self, value: &bool) -> Option<String> {
        Some(value.to_string())
    }
}

/// `text` or `json`.
#[derive(Debug)]
pub(crate) struct LogFormats;

impl Kind for LogFormats {
    type Value = LogFormat;
    fn parse(&self, text: &str) -> Result<LogFormat, String> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".to_owned()),
        }
    }
    fn show(&self, value: &LogFormat) -> Option<String> {
        Some(match value {
            LogFormat::Text => "text".to_owned(),
            LogFormat::Json => "json".to_owned(),
        })
    }
}

/// Octal permissions up to `0777`.
#[derive(Debug)]
pub(crate) struct Mode;

impl Kind for Mode {
    type Value = u32;
    fn parse(&self, text: &str) -> Result<u32, String> {
        u32::from_str_radix(text.strip_prefix("0o").unwrap_or(text), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| "expected octal permissions from 0 to 0777, for example 0660".to_owned())
    }
    fn show(&self, value: &u32) -> Option<String> {
        Some(format!("{value:04o}"))
    }
}

/// A listen address: `host:port`, `:port`, or `unix:` and a socket's path.
#[derive(Debug)]
pub(crate) struct Address;

impl Kind for Address {
    type Value = Cow<'static, str>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        if let Some(path) = unix_socket_path(text) {
            return if path.as_os_str().is_empty() || path.file_name().is_none() {
                Err("expected unix: and the socket's path, for example unix:/run/orchmirror.sock".to_owned())
            } else {
                Ok(Cow::Owned(text.to_owned()))
            };
        }
        resolve_bind(text).map(|_| Cow::Owned(text.to_owned()))
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        Some(value.to_string())
    }
}

/// The orchestrator's database: an existing regular file this process can open.
#[derive(Debug)]
pub(crate) struct Database;

impl Kind for Database {
    type Value = Option<PathBuf>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        if text.is_empty() {
            return Err("the path is empty (leave ORCH_DB_PATH unset for demo mode)".to_owned());
        }
        let path = PathBuf::from(text);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such file".to_owned()),
            Err(e) => Err(format!("cannot access it: {e}")),
            Ok(m) if !m.is_file() => Err("not a regular file".to_owned()),
            Ok(_) => match std::fs::File::open(&path) {
                Ok(_) => Ok(Some(path)),
                Err(e) => Err(format!("cannot open it for reading: {e}")),
            },
        }
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        value.as_ref().map(|p| p.display().to_string())
    }
}

/// The path of a file (checked when it is read).
#[derive(Debug)]
pub(crate) struct FilePath;

impl Kind for FilePath {
    type Value = Option<PathBuf>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        (!text.is_empty()).then(|| Some(PathBuf::from(text))).ok_or_else(|| "expected the path of a file".to_owned())
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        value.as_ref().map(|p| p.display().to_string())
    }
}

/// Host names separated by commas, or `*`.
#[derive(Debug)]
pub(crate) struct HostNames;

impl Kind for HostNames {
    type Value = Vec<String>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        let names: Vec<String> = text.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
        if names.iter().all(|n| valid_host_name(n)) {
            Ok(names)
        } else {
            Err("expected host names separated by commas (letters, digits, '-' and '.'), or *".to_owned())
        }
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        (!value.is_empty()).then(|| value.join(","))
    }
}

/// A group: a name or a numeric gid.
#[derive(Debug)]
pub(crate) struct Group;

impl Kind for Group {
    type Value = Option<String>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        let ok = !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        ok.then(|| Some(text.to_owned())).ok_or_else(|| "expected a group name or a numeric gid".to_owned())
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        value.clone()
    }
}

/// `ORCH_DB_PATH`.
pub(crate) static DB_PATH: Spec<Database> = Spec {
    key: "db_path",
    var: "ORCH_DB_PATH",
    flag: "db",
    value_name: "PATH",
    meaning: "The orchestrator's SQLite file, opened read-only (unset: demo mode on a throw-away database)",
    kind: Database,
    default: None,
};
/// `ORCH_BIND`.
pub(crate) static BIND: Spec<Address> = Spec {
    key: "bind",
    var: "ORCH_BIND",
    flag: "bind",
    value_name: "ADDR",
    meaning: "Listen address, host:port (:PORT means every interface), or unix:/path for a Unix socket",
    kind: Address,
    default: Cow::Borrowed("127.0.0.1:8787"),
};
/// `ORCH_METRICS_ENABLED`.
pub(crate) static METRICS_ENABLED: Spec<Switch> = Spec {
    key: "metrics_enabled",
    var: "ORCH_METRICS_ENABLED",
    flag: "metrics-enabled",
    value_name: "BOOL",
    meaning: "Kill switch: false/0/no/off serves {\"enabled\":false} and never reads the database",
    kind: Switch,
    default: true,
};
/// `ORCH_REFRESH_MS`; `ORCH_<SECTION>_REFRESH_MS` takes the same values.
pub(crate) static REFRESH: Spec<Millis> = Spec {
    key: "refresh_ms",
    var: "ORCH_REFRESH_MS",
    flag: "refresh-ms",
    value_name: "MS",
    meaning: "Refresh period of every section, ms",
    kind: Millis(10, 3_600_000),
    default: Duration::from_millis(1000),
};
/// `ORCH_SNAPSHOT_TIMEOUT_MS`.
pub(crate) static SNAPSHOT_TIMEOUT: Spec<Millis> = Spec {
    key: "snapshot_timeout_ms",
    var: "ORCH_SNAPSHOT_TIMEOUT_MS",
    flag: "snapshot-timeout-ms",
    value_name: "MS",
    meaning: "How long /metrics waits for each section actor, ms",
    kind: Millis(1, 60_000),
    default: Duration::from_millis(200),
};
/// `ORCH_MAX_STALE_MS`.
pub(crate) static MAX_STALE: Spec<Millis> = Spec {
    key: "max_stale_ms",
    var: "ORCH_MAX_STALE_MS",
    flag: "max-stale-ms",
    value_name: "MS",
    meaning: "How old last-good data may be and still be served as stale, ms",
    kind: Millis(0, 7 * 24 * 3_600_000),
    default: Duration::from_millis(30_000),
};
/// `ORCH_PID_START_TOLERANCE_S`.
pub(crate) static PID_START_TOLERANCE: Spec<Seconds> = Spec {
    key: "pid_start_tolerance_s",
    var: "ORCH_PID_START_TOLERANCE_S",
    flag: "pid-start-tolerance-s",
    value_name: "S",
    meaning: "Pid-reuse guard: largest gap between a process's start and its run's started_at, s",
    kind: Seconds(86_400.0),
    default: Duration::from_secs(10),
};
/// `ORCH_RECONCILE_MS`.
///
/// The default is chosen from measurement (BENCHMARKS.md): at 1M jobs a full
/// recomputation of all four sections costs under a second of one core, so
/// every 5 minutes it stays within 1 % of one core.
pub(crate) static RECONCILE: Spec<Millis> = Spec {
    key: "reconcile_ms",
    var: "ORCH_RECONCILE_MS",
    flag: "reconcile-ms",
    value_name: "MS",
    meaning: "The longest a history edit may stay unseen: every section re-derives everything this often, ms",
    kind: Millis(1_000, 86_400_000),
    default: Duration::from_millis(300_000),
};
/// `ORCH_LOG_FORMAT`.
pub(crate) static LOG_FORMAT: Spec<LogFormats> = Spec {
    key: "log_format",
    var: "ORCH_LOG_FORMAT",
    flag: "log-format",
    value_name: "FORMAT",
    meaning: "Log format: text or json (one JSON object per line)",
    kind: LogFormats,
    default: LogFormat::Text,
};
/// `ORCH_UI_ENABLED`.
pub(crate) static UI_ENABLED: Spec<Switch> = Spec {
    key: "ui_enabled",
    var: "ORCH_UI_ENABLED",
    flag: "ui-enabled",
    value_name: "BOOL",
    meaning: "Serve the live page at /",
    kind: Switch,
    default: true,
};
/// `ORCH_MAX_STREAMS`.
pub(crate) static MAX_STREAMS: Spec<Derived> = Spec {
    key: "max_streams",
    var: "ORCH_MAX_STREAMS",
    flag: "max-streams",
    value_name: "N",
    meaning: "Concurrent /metrics/stream clients; one more gets 503 [default: what the open-files limit leaves]",
    kind: Derived(Count(0, 100_000), "derived from the open-files limit"),
    default: None,
};
/// `ORCH_STREAM_HEARTBEAT_MS`.
pub(crate) static STREAM_HEARTBEAT: Spec<Millis> = Spec {
    key: "stream_heartbeat_ms",
    var: "ORCH_STREAM_HEARTBEAT_MS",
    flag: "stream-heartbeat-ms",
    value_name: "MS",
    meaning: "How often an idle stream sends a comment line, ms",
    kind: Millis(1_000, 3_600_000),
    default: Duration::from_millis(15_000),
};
/// `ORCH_COALESCE_MS`.
///
/// The default is chosen from measurement (BENCHMARKS.md, "Commit to
/// visible"): a commit at a random moment waits for the gap only when it
/// comes within it of the section's previous refresh, so 20 ms keeps the 99th
/// percentile of commit to stream event within 25 ms at a few commits a
/// second, while 1,000 commits a second cost at most 50 refreshes a second
/// per section.
pub(crate) static COALESCE: Spec<Millis> = Spec {
    key: "coalesce_ms",
    var: "ORCH_COALESCE_MS",
    flag: "coalesce-ms",
    value_name: "MS",
    meaning: "Shortest time between two refreshes of one section that commits woke, ms",
    kind: Millis(1, 3_600_000),
    default: Duration::from_millis(20),
};
/// `ORCH_CPU_BUDGET_PERCENT`: what the mirror may spend on refreshes that
/// commits wake, at any commit rate (README, "Commit to visible").
pub(crate) static CPU_BUDGET: Spec<Percent> = Spec {
    key: "cpu_budget_percent",
    var: "ORCH_CPU_BUDGET_PERCENT",
    flag: "cpu-budget-percent",
    value_name: "PERCENT",
    meaning: "Share of one core the mirror may spend when commits keep coming; past it the gap between refreshes widens",
    kind: Percent(0.1, 100.0),
    default: 10.0,
};
/// `ORCH_ALLOWED_HOSTS`.
pub(crate) static ALLOWED_HOSTS: Spec<HostNames> = Spec {
    key: "allowed_hosts",
    var: "ORCH_ALLOWED_HOSTS",
    flag: "allowed-hosts",
    value_name: "NAMES",
    meaning: "Host names answered besides IP literals, localhost and this machine's name (comma-separated; * for any)",
    kind: HostNames,
    default: Vec::new(),
};
/// `ORCH_SOCKET_MODE`: by default the socket's owner and group may connect
/// (connecting needs write permission), nobody else.
pub(crate) static SOCKET_MODE: Spec<Mode> = Spec {
    key: "socket_mode",
    var: "ORCH_SOCKET_MODE",
    flag: "socket-mode",
    value_name: "MODE",
    meaning: "Permissions of the Unix socket (ORCH_BIND=unix:/path), octal",
    kind: Mode,
    default: 0o660,
};
/// `ORCH_SOCKET_GROUP`.
pub(crate) static SOCKET_GROUP: Spec<Group> = Spec {
    key: "socket_group",
    var: "ORCH_SOCKET_GROUP",
    flag: "socket-group",
    value_name: "GROUP",
    meaning: "Group of the Unix socket, a name or a gid (unset: the process's)",
    kind: Group,
    default: None,
};
/// `ORCH_WEB_CONFIG_FILE` (the flag as the Prometheus exporters spell it).
pub(crate) static WEB_CONFIG_FILE: Spec<FilePath> = Spec {
    key: "web_config_file",
    var: "ORCH_WEB_CONFIG_FILE",
    flag: "web.config.file",
    value_name: "PATH",
    meaning: "Web configuration file (Prometheus exporter-toolkit format): TLS, basic-auth users, response headers",
    kind: FilePath,
    default: None,
};

/// Every setting, in the order `--help` lists them.
pub static SETTINGS: [&dyn Row; 18] = [
    &DB_PATH,
    &BIND,
    &METRICS_ENABLED,
    &REFRESH,
    &SNAPSHOT_TIMEOUT,
    &MAX_STALE,
    &PID_START_TOLERANCE,
    &RECONCILE,
    &LOG_FORMAT,
    &UI_ENABLED,
    &MAX_STREAMS,
    &STREAM_HEARTBEAT,
    &COALESCE,
    &CPU_BUDGET,
    &ALLOWED_HOSTS,
    &SOCKET_MODE,
    &SOCKET_GROUP,
    &WEB_CONFIG_FILE,
];

/// The setting whose configuration key is `key`.
pub fn by_key(key: &str) -> Option<&'static dyn Row> {
    SETTINGS.iter().copied().find(|r| r.key() == key)
}

/// The variable of section `name`'s own refresh period: `ORCH_<NAME>_REFRESH_MS`.
pub fn section_period_var(name: &str) -> String {
    crate::section::refresh_var_of(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_itself_consistently_and_its_default_is_accepted() {
        let mut keys = std::collections::BTreeSet::new();
        for row in SETTINGS {
            assert!(keys.insert(row.key()), "{} twice", row.key());
            assert_eq!(row.var(), format!("ORCH_{}", row.key().to_ascii_uppercase()), "{}", row.key());
            assert!(!row.meaning().is_empty() && !row.meaning().contains('\n'), "{}: one line of meaning", row.key());
            if let Some(default) = row.default_text()
                && row.key() != "db_path"
            {
                assert_eq!(row.check(&default), Ok(()), "{}'s default {default:?}", row.key());
            }
        }
    }
}
