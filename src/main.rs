//! The `orchmirror` binary: parse flags, load the configuration, start logging,
//! then run the mirror (or the demo) until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use orchmirror::tools::demo::Demo;
use orchmirror::{CliOverrides, MirrorHandle, Settings};

/// Serves an AI-agent orchestrator's SQLite state as a JSON envelope at GET /metrics.
///
/// Without ORCH_DB_PATH (or --db) it runs in demo mode on a throw-away database.
/// Every setting is also an ORCH_* environment variable; see README.md.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The orchestrator's SQLite file, opened read-only (overrides ORCH_DB_PATH).
    #[arg(long, value_name = "PATH", global = true)]
    db: Option<PathBuf>,
    /// Listen address, host:port (overrides ORCH_BIND).
    #[arg(long, value_name = "ADDR", global = true)]
    bind: Option<String>,
    /// A TOML configuration file (overrides ORCH_CONFIG_FILE).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Measure each section's refresh on the database (--db or ORCH_DB_PATH, read-only)
    /// and print the shortest refresh periods a CPU budget affords.
    Tune {
        /// CPU budget for the whole mirror, in percent of one core.
        #[arg(long, default_value_t = 2.0, value_parser = parse_budget)]
        budget: f64,
        /// Timed refreshes per section (after two warm-up refreshes).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(3..))]
        samples: u16,
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

fn parse_budget(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(b) if b > 0.0 && b <= 100.0 => Ok(b),
        _ => Err(format!("{s:?} is not a percentage in (0, 100]")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Generate { path, jobs, running, no_indexes }) = &cli.command {
        init_logging(orchmirror::LogFormat::Text);
        return generate(path, *jobs, *running, !*no_indexes);
    }
    let mut settings = match load_settings(CliOverrides::new(cli.db, cli.bind, cli.config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("orchmirror: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(settings.log_format);
    if let Some(Command::Tune { budget, samples, json }) = cli.command {
        return tune(&settings, budget, samples, json);
    }
    let demo = match start_demo(&mut settings) {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("orchmirror: cannot start demo mode: {e}");
            return ExitCode::FAILURE;
        }
    };
    raise_fd_limit();
    let code = actix_web::rt::System::new().block_on(serve(settings));
    if let Some(demo) = demo {
        demo.shutdown();
    }
    code
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime
/// does: the common soft limit (1,024) is below what a server with many
/// clients needs, and the connection cap is sized from the result.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "raised the soft limit on open files to the hard limit"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the soft limit on open files; the connection cap follows it")
        }
    }
}

/// Logs to stderr as `format` says (`ORCH_LOG_FORMAT`); `RUST_LOG` filters (default `info`).
fn init_logging(format: orchmirror::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        orchmirror::LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
        }
        // One JSON object per line, fields at the top level, for log shippers.
        orchmirror::LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// The layered settings, checked against the sections the binary runs.
fn load_settings(overrides: CliOverrides) -> Result<Settings, orchmirror::ConfigError> {
    let settings = Settings::load(std::env::vars(), &overrides)?;
    // The binary runs the built-in sections only: a period for any other is a typo.
    settings.refresh.check(&orchmirror::SectionName::BUILT_IN)?;
    Ok(settings)
}

/// Demo mode when no database is configured and the mirror is on (with the
/// kill switch off nothing is created or read); points `settings` at it.
fn start_demo(settings: &mut Settings) -> Result<Option<Demo>, orchmirror::tools::demo::DemoError> {
    if !settings.metrics_enabled {
        tracing::warn!(
            "ORCH_METRICS_ENABLED is false: /metrics answers {{\"enabled\":false}} and the database is not read"
        );
        return Ok(None);
    }
    if settings.db_path.is_some() {
        return Ok(None);
    }
    let demo = Demo::start()?;
    tracing::warn!(
        db = %demo.path().display(),
        "DEMO MODE: no ORCH_DB_PATH set; serving a simulated orchestrator from a throw-away database (removed on exit)"
    );
    settings.db_path = Some(demo.path().to_path_buf());
    Ok(Some(demo))
}

/// Starts the mirror and serves it until SIGTERM or SIGINT.
async fn serve(settings: Settings) -> ExitCode {
    // The address first: a port in use stops the program before anything starts.
    let listeners = match orchmirror::serve::http::listen(&settings) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("orchmirror: cannot listen on {}: {e}", settings.bind);
            return ExitCode::FAILURE;
        }
    };
    let handle = match MirrorHandle::start(&settings) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("orchmirror: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match orchmirror::serve::http::serve_on(listeners, handle.clone()) {
        Ok((s, _)) => s,
        Err(e) => {
            eprintln!("orchmirror: cannot serve on {}: {e}", settings.bind);
            return ExitCode::FAILURE;
        }
    };
    let result = server.await;
    handle.stop();
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orchmirror: server error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(path: &std::path::Path, jobs: u64, running: u64, indexes: bool) -> ExitCode {
    if path.exists() {
        eprintln!("orchmirror: {} exists; generate writes a new file only", path.display());
        return ExitCode::from(2);
    }
    let started = std::time::Instant::now();
    let spec = orchmirror::tools::generate::Spec::jobs(jobs).running(running.min(jobs)).indexes(indexes);
    match orchmirror::tools::generate::generate(path, &spec) {
        Ok(()) => {
            eprintln!(
                "wrote {} ({jobs} jobs, indexes: {indexes}) in {:.1} s",
                path.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orchmirror: cannot generate {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn tune(settings: &Settings, budget: f64, samples: u16, json: bool) -> ExitCode {
    let Some(path) = settings.db_path.as_deref() else {
        eprintln!("orchmirror: tune needs a database: --db PATH or ORCH_DB_PATH");
        return ExitCode::from(2);
    };
    let mut opts = orchmirror::tools::tune::Options::default();
    opts.budget_percent = budget;
    opts.samples = usize::from(samples);
    match orchmirror::tools::tune::run(settings, path, &opts) {
        Ok(report) if json => match serde_json::to_string_pretty(&report) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("orchmirror: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orchmirror: tune failed: {e}");
            ExitCode::FAILURE
        }
    }
}
