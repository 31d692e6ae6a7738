//! The `orchmirror` binary: parse flags, load the configuration, start logging,
//! then run the mirror (or the demo) until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use orchmirror::demo::Demo;
use orchmirror::{CliOverrides, MirrorHandle, Settings};

/// Serves an AI-agent orchestrator's SQLite state as a JSON envelope at GET /metrics.
///
/// Without ORCH_DB_PATH (or --db) it runs in demo mode on a throw-away database.
/// Every setting is also an ORCH_* environment variable; see README.md.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The orchestrator's SQLite file, opened read-only (overrides ORCH_DB_PATH).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Listen address, host:port (overrides ORCH_BIND).
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// A TOML configuration file (overrides ORCH_CONFIG_FILE).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let overrides = CliOverrides::new(cli.db, cli.bind, cli.config);
    let mut settings = match Settings::load(std::env::vars(), &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("orchmirror: configuration error: {e}");
            return ExitCode::from(2);
        }
    };

    // Demo mode only when the mirror is on: with the kill switch off nothing is created or read.
    let demo = if settings.metrics_enabled && settings.db_path.is_none() {
        match Demo::start() {
            Ok(demo) => {
                tracing::warn!(
                    db = %demo.path().display(),
                    "DEMO MODE: no ORCH_DB_PATH set; serving a simulated orchestrator from a throw-away database (removed on exit)"
                );
                settings.db_path = Some(demo.path().to_path_buf());
                Some(demo)
            }
            Err(e) => {
                eprintln!("orchmirror: cannot start demo mode: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    if !settings.metrics_enabled {
        tracing::warn!(
            "ORCH_METRICS_ENABLED is false: /metrics answers {{\"enabled\":false}} and the database is not read"
        );
    }

    let code = actix_web::rt::System::new().block_on(async move {
        let handle = match MirrorHandle::start(&settings) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("orchmirror: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = match orchmirror::http::server(&settings, handle.clone()) {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("orchmirror: cannot listen on {}: {e}", settings.bind);
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
    });
    if let Some(demo) = demo {
        demo.shutdown();
    }
    code
}
