//! Every setting, declared once: the [`Settings`] field it fills, its
//! configuration key, variable, flag, default, accepted values, one line of
//! meaning and its name in the start-up line. From the one row, [`settings!`]
//! makes the field, its default, its loading ([`super::Settings::load`]),
//! its field in the start-up line ([`Settings::log_start`]) and its entry in
//! [`SETTINGS`], which the flags and `--help` (the binary), the configuration
//! file's key check and the test that compares `.env.example` and README's
//! table with it all read.
//!
//! A new setting is one row in the `settings!` below, and its use.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::error::ConfigError;
use crate::config::periods::RefreshPeriods;
use crate::config::values::LogFormat;

pub use crate::config::kinds::Row;
pub(crate) use crate::config::kinds::{
    Address, Count, Database, Derived, FilePath, Group, HostNames, Kind, LogFormats, Millis, Mode, Percent, Periods,
    Seconds, Spec, Switch,
};

/// Makes, from one row per setting (its doc, `pub field: Type as log_name =
/// SPEC: Kind { the Spec's fields }`): the `Spec` static, the [`Settings`]
/// field, [`SETTINGS`], the defaults, the loading and the start-up line.
macro_rules! settings {
    ($(
        $(#[doc = $doc:expr])*
        pub $field:ident: $ty:ty as $log:ident = $spec:ident: $kind:ty { $($body:tt)* },
    )*) => {
        $(
            #[doc = concat!("The setting behind [`Settings::", stringify!($field), "`].")]
            pub(crate) static $spec: Spec<$kind> = Spec { $($body)* };
        )*

        /// Every setting, in the order `--help` lists them.
        pub static SETTINGS: &[&dyn Row] = &[$(&$spec),*];

        /// The mirror's validated settings. Build one with [`Settings::default`] and
        /// adjust fields, or load the layered configuration with [`Settings::load`].
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub struct Settings {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Self { $($field: $spec.kind.field($spec.default.clone()),)* }
            }
        }

        impl Settings {
            /// Every setting as the layers give it (each section's own period is added by the caller).
            pub(super) fn read(layers: &super::Layers<'_>) -> Result<Settings, ConfigError> {
                Ok(Self { $($field: $spec.kind.field(layers.get(&$spec)?),)* })
            }

            /// Logs the start-up line: the version, `settings_files` (the
            /// settings files read) and every effective setting.
            pub fn log_start(&self, settings_files: &str) {
                tracing::info!(
                    target: "orchmirror",
                    version = crate::source::build::BUILD.version,
                    revision = crate::source::build::BUILD.revision,
                    rustc = crate::source::build::BUILD.rustc_version,
                    settings_files,
                    $($log = $spec.kind.logged(&self.$field),)*
                    "orchmirror starting"
                );
            }
        }

        #[cfg(test)]
        /// Each setting's configuration key and its name in the start-up line.
        pub(crate) const LOGGED_AS: &[(&str, &str)] = &[$(($spec.key, stringify!($log))),*];
    };
}

settings! {
    /// `ORCH_DB_PATH`: the orchestrator's database; `None` means demo mode.
    pub db_path: Option<PathBuf> as db = DB_PATH: Database {
        key: "db_path",
        var: "ORCH_DB_PATH",
        flag: "db",
        value_name: "PATH",
        meaning: "The orchestrator's SQLite file, opened read-only (unset: demo mode on a throw-away database)",
        kind: Database,
        default: None,
    },
    /// `ORCH_BIND`: the listen address, as given.
    pub bind: String as bind = BIND: Address {
        key: "bind",
        var: "ORCH_BIND",
        flag: "bind",
        value_name: "ADDR",
        meaning: "Listen address, host:port (:PORT means every interface), or unix:/path for a Unix socket",
        kind: Address,
        default: Cow::Borrowed("127.0.0.1:8787"),
    },
    /// `ORCH_METRICS_ENABLED`: the kill switch.
    pub metrics_enabled: bool as metrics_enabled = METRICS_ENABLED: Switch {
        key: "metrics_enabled",
        var: "ORCH_METRICS_ENABLED",
        flag: "metrics-enabled",
        value_name: "BOOL",
        meaning: "Kill switch: false/0/no/off serves {\"enabled\":false} and never reads the database",
        kind: Switch,
        default: true,
    },
    /// `ORCH_REFRESH_MS` and the per-section overrides.
    pub refresh: RefreshPeriods as refresh_ms = REFRESH: Periods {
        key: "refresh_ms",
        var: "ORCH_REFRESH_MS",
        flag: "refresh-ms",
        value_name: "MS",
        meaning: "Refresh period of every section, ms",
        kind: Periods(Millis(10, 3_600_000)),
        default: Duration::from_millis(1000),
    },
    /// `ORCH_SNAPSHOT_TIMEOUT_MS`.
    pub snapshot_timeout: Duration as snapshot_timeout_ms = SNAPSHOT_TIMEOUT: Millis {
        key: "snapshot_timeout_ms",
        var: "ORCH_SNAPSHOT_TIMEOUT_MS",
        flag: "snapshot-timeout-ms",
        value_name: "MS",
        meaning: "How long /metrics waits for each section actor, ms",
        kind: Millis(1, 60_000),
        default: Duration::from_millis(200),
    },
    /// `ORCH_MAX_STALE_MS`.
    pub max_stale: Duration as max_stale_ms = MAX_STALE: Millis {
        key: "max_stale_ms",
        var: "ORCH_MAX_STALE_MS",
        flag: "max-stale-ms",
        value_name: "MS",
        meaning: "How old last-good data may be and still be served as stale, ms",
        kind: Millis(0, 7 * 24 * 3_600_000),
        default: Duration::from_millis(30_000),
    },
    /// `ORCH_PID_START_TOLERANCE_S`.
    pub pid_start_tolerance: Duration as pid_start_tolerance_s = PID_START_TOLERANCE: Seconds {
        key: "pid_start_tolerance_s",
        var: "ORCH_PID_START_TOLERANCE_S",
        flag: "pid-start-tolerance-s",
        value_name: "S",
        meaning: "Pid-reuse guard: largest gap between a process's start and its run's started_at, s",
        kind: Seconds(86_400.0),
        default: Duration::from_secs(10),
    },
    /// `ORCH_RECONCILE_MS`: every section derives everything from the database at least this often.
    ///
    /// The default is chosen from measurement (BENCHMARKS.md): at 1M jobs a full
    /// recomputation of all four sections costs under a second of one core, so
    /// every 5 minutes it stays within 1 % of one core.
    pub reconcile: Duration as reconcile_ms = RECONCILE: Millis {
        key: "reconcile_ms",
        var: "ORCH_RECONCILE_MS",
        flag: "reconcile-ms",
        value_name: "MS",
        meaning: "The longest a history edit may stay unseen: every section re-derives everything this often, ms",
        kind: Millis(1_000, 86_400_000),
        default: Duration::from_millis(300_000),
    },
    /// `ORCH_LOG_FORMAT`: how the binary writes its log.
    pub log_format: LogFormat as log_format = LOG_FORMAT: LogFormats {
        key: "log_format",
        var: "ORCH_LOG_FORMAT",
        flag: "log-format",
        value_name: "FORMAT",
        meaning: "Log format: text or json (one JSON object per line)",
        kind: LogFormats,
        default: LogFormat::Text,
    },
    /// `ORCH_UI_ENABLED`: serve the live page at `/`.
    pub ui_enabled: bool as ui_enabled = UI_ENABLED: Switch {
        key: "ui_enabled",
        var: "ORCH_UI_ENABLED",
        flag: "ui-enabled",
        value_name: "BOOL",
        meaning: "Serve the live page at /",
        kind: Switch,
        default: true,
    },
    /// `ORCH_MAX_STREAMS`: concurrent `/metrics/stream` clients; one more
    /// gets `503`. `None`: what the open-files limit leaves once the other
    /// routes' share is kept (the server works it out when it starts).
    pub max_streams: Option<usize> as max_streams = MAX_STREAMS: Derived {
        key: "max_streams",
        var: "ORCH_MAX_STREAMS",
        flag: "max-streams",
        value_name: "N",
        meaning: "Concurrent /metrics/stream clients; one more gets 503 [default: what the open-files limit leaves]",
        kind: Derived(Count(0, 100_000), "derived from the open-files limit"),
        default: None,
    },
    /// `ORCH_STREAM_HEARTBEAT_MS`: how often an idle stream sends a comment line.
    pub stream_heartbeat: Duration as stream_heartbeat_ms = STREAM_HEARTBEAT: Millis {
        key: "stream_heartbeat_ms",
        var: "ORCH_STREAM_HEARTBEAT_MS",
        flag: "stream-heartbeat-ms",
        value_name: "MS",
        meaning: "How often an idle stream sends a comment line, ms",
        kind: Millis(1_000, 3_600_000),
        default: Duration::from_millis(15_000),
    },
    /// `ORCH_COALESCE_MS`: the shortest time between two refreshes of one
    /// section when commits keep waking it.
    ///
    /// The default is chosen from measurement (BENCHMARKS.md, "Commit to
    /// visible"): a commit at a random moment waits for the gap only when it
    /// comes within it of the section's previous refresh, so 20 ms keeps the 99th
    /// percentile of commit to stream event within 25 ms at a few commits a
    /// second, while 1,000 commits a second cost at most 50 refreshes a second
    /// per section.
    pub coalesce: Duration as coalesce_ms = COALESCE: Millis {
        key: "coalesce_ms",
        var: "ORCH_COALESCE_MS",
        flag: "coalesce-ms",
        value_name: "MS",
        meaning: "Shortest time between two refreshes of one section that commits woke, ms",
        kind: Millis(1, 3_600_000),
        default: Duration::from_millis(20),
    },
    /// `ORCH_CPU_BUDGET_PERCENT`: the share of one core (in percent) the
    /// mirror may spend when commits keep waking it; past it the gap between
    /// refreshes widens (up to each section's period).
    ///
    /// commits wake, at any commit rate (README, "Commit to visible").
    pub cpu_budget_percent: f64 as cpu_budget_percent = CPU_BUDGET: Percent {
        key: "cpu_budget_percent",
        var: "ORCH_CPU_BUDGET_PERCENT",
        flag: "cpu-budget-percent",
        value_name: "PERCENT",
        meaning: "Share of one core the mirror may spend when commits keep coming; past it the gap between refreshes widens",
        kind: Percent(0.1, 100.0),
        default: 5.0,
    },
    /// `ORCH_ALLOWED_HOSTS`: `Host` names answered besides IP literals,
    /// `localhost` and this machine's name (`*`: every name).
    pub allowed_hosts: Vec<String> as allowed_hosts = ALLOWED_HOSTS: HostNames {
        key: "allowed_hosts",
        var: "ORCH_ALLOWED_HOSTS",
        flag: "allowed-hosts",
        value_name: "NAMES",
        meaning: "Host names answered besides IP literals, localhost and this machine's name (comma-separated; * for any)",
        kind: HostNames,
        default: Vec::new(),
    },
    /// `ORCH_SOCKET_MODE`: the permissions of the Unix socket (`ORCH_BIND=unix:/path`).
    ///
    /// (connecting needs write permission), nobody else.
    pub socket_mode: u32 as socket_mode = SOCKET_MODE: Mode {
        key: "socket_mode",
        var: "ORCH_SOCKET_MODE",
        flag: "socket-mode",
        value_name: "MODE",
        meaning: "Permissions of the Unix socket (ORCH_BIND=unix:/path), octal",
        kind: Mode,
        default: 0o660,
    },
    /// `ORCH_SOCKET_GROUP`: the group the Unix socket is given (a name or a
    /// number); `None` keeps the process's.
    pub socket_group: Option<String> as socket_group = SOCKET_GROUP: Group {
        key: "socket_group",
        var: "ORCH_SOCKET_GROUP",
        flag: "socket-group",
        value_name: "GROUP",
        meaning: "Group of the Unix socket, a name or a gid (unset: the process's)",
        kind: Group,
        default: None,
    },
    /// `ORCH_WEB_CONFIG_FILE`: the web configuration file (exporter-toolkit
    /// format: basic-auth users, response headers), re-read when it changes.
    pub web_config_file: Option<PathBuf> as web_config_file = WEB_CONFIG_FILE: FilePath {
        key: "web_config_file",
        var: "ORCH_WEB_CONFIG_FILE",
        flag: "web.config.file",
        value_name: "PATH",
        meaning: "Web configuration file (Prometheus exporter-toolkit format): TLS, basic-auth users, response headers",
        kind: FilePath,
        default: None,
    },
}

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

    #[test]
    fn the_start_up_line_names_each_setting_by_its_key_and_the_database_as_db() {
        assert_eq!(LOGGED_AS.len(), SETTINGS.len());
        for (key, logged) in LOGGED_AS {
            let expected = if *key == "db_path" { "db" } else { key };
            assert_eq!(*logged, expected, "{key}");
        }
    }
}
