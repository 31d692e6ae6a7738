//! The binary's command line: its flags, the setting flags generated from
//! the settings table, and its subcommands.

use std::path::PathBuf;

use clap::{ArgMatches, Parser};

/// `--version`: the crate's version, the git revision and the compiler.
pub(crate) const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ORCHMIRROR_GIT_REVISION"),
    ", ",
    env!("ORCHMIRROR_RUSTC_VERSION"),
    ")"
);

/// Serves an AI-agent orchestrator's SQLite state: JSON at /metrics, a stream
/// at /metrics/stream, Prometheus at /metrics/prometheus, a live page at /.
///
/// Without ORCH_DB_PATH (or --db) it runs in demo mode on a throw-away database.
/// Every setting is a flag and an ORCH_* variable; layers, later wins: defaults,
/// the TOML file (--config), .env (--env-file), the environment, flags.
#[derive(Debug, Parser)]
#[command(version = LONG_VERSION, about, long_about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) files: Files,
    /// The orchestrator's SQLite file, opened read-only [default: demo mode]
    #[arg(long, value_name = "PATH", env = "ORCH_DB_PATH")]
    pub(crate) db: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) settings: SettingFlags,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// Where settings come from besides the environment and flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Files {
    /// A TOML file with the settings (keys: the variables without ORCH_, lower case)
    #[arg(long, value_name = "FILE", env = "ORCH_CONFIG_FILE")]
    pub(crate) config: Option<PathBuf>,
    /// A dotenv file read below the real environment (a missing ./.env is fine; a named file must exist)
    #[arg(long, value_name = "FILE", default_value = ".env")]
    pub(crate) env_file: PathBuf,
}

/// Every setting of the settings table (`orchmirror::config::table`) as a
/// flag, and each built-in section's refresh period; the help shows its
/// meaning, range, variable and default. Only values given on the command
/// line are taken from here: the environment and files are read by the
/// configuration layers. Each flag's id is its configuration key.
#[derive(Debug)]
pub(crate) struct SettingFlags;

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(_: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(SettingFlags)
    }

    fn update_from_arg_matches(&mut self, _: &ArgMatches) -> Result<(), clap::Error> {
        Ok(())
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        use orchmirror::config::table::{Row, SETTINGS, by_key, section_period_var};
        let flag = |row: &dyn Row| {
            let help = match row.range() {
                Some(range) => format!("{} ({range})", row.meaning()),
                None => row.meaning().to_owned(),
            };
            let arg = clap::Arg::new(row.key()).long(row.flag()).value_name(row.value_name()).env(row.var()).help(help);
            match row.default_text() {
                Some(default) => arg.default_value(default),
                None => arg,
            }
        };
        // `--db` is the command's own (the tune subcommand has it too).
        for row in SETTINGS.iter().filter(|r| r.key() != "db_path") {
            cmd = cmd.arg(flag(*row));
        }
        for name in orchmirror::SectionName::BUILT_IN {
            cmd = cmd.arg(
                clap::Arg::new(format!("{name}_refresh_ms"))
                    .long(format!("{name}-refresh-ms"))
                    .value_name(by_key("refresh_ms").map_or("MS", |r| r.value_name()))
                    .env(section_period_var(name.as_str()))
                    .help(format!("The {name} section's refresh period, ms [default: ORCH_REFRESH_MS]")),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Measure each section's refresh on the database (--db or ORCH_DB_PATH, read-only)
    /// and print the shortest refresh periods a CPU budget affords.
    Tune {
        #[command(flatten)]
        files: Files,
        /// The orchestrator's SQLite file, opened read-only
        #[arg(long, value_name = "PATH", env = "ORCH_DB_PATH")]
        db: Option<PathBuf>,
        /// CPU budget for the whole mirror, in percent of one core.
        #[arg(long, default_value_t = 2.0, value_parser = parse_budget)]
        budget: f64,
        /// Timed refreshes per section in each of the three rounds (after two warm-up refreshes).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(3..))]
        samples: u16,
        /// The sustained commit rate to choose ORCH_COALESCE_MS for (measured on a scratch copy), commits a second.
        #[arg(long, default_value_t = 20.0, value_parser = parse_rate)]
        commit_rate: f64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a deterministic orchestrator database of the given size (for tune and benchmarks).
    Generate {
        /// Where to write it (must not exist).
        path: PathBuf,
        /// Number of jobs (tasks: a quarter; one run per started job).
        #[arg(long, default_value_t = 100_000)]
        jobs: u64,
        /// Running jobs.
        #[arg(long, default_value_t = 10)]
        running: u64,
        /// Leave out the production indexes.
        #[arg(long)]
        no_indexes: bool,
    },
}

pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.1..=10_000.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a rate in [0.1, 10000] commits a second")),
    }
}

pub(crate) fn parse_budget(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(b) if b > 0.0 && b <= 100.0 => Ok(b),
        _ => Err(format!("{s:?} is not a percentage in (0, 100]")),
    }
}
