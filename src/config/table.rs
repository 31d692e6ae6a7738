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
use std::time::Duration;

use crate::config::values::LogFormat;

pub use crate::config::kinds::Row;
pub(crate) use crate::config::kinds::{
    Address, Count, Database, Derived, FilePath, Group, HostNames, LogFormats, Millis, Mode, Percent, Seconds, Spec,
    Switch,
};

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
