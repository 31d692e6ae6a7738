//! The `orchmirror` binary: parse flags, load the configuration, start logging,
//! then run the mirror (or the demo) until SIGTERM, SIGHUP or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use orchmirror::tools::demo::Demo;
use orchmirror::{CliOverrides, Settings};

#[path = "cli/args.rs"]
mod args;

use args::{Cli, Command};

/// Large buffers (a big envelope's JSON, a connection's write buffer while
/// it sends one) are mapped from the kernel and given back when freed. By
/// default glibc raises its mmap threshold each time such a buffer is freed,
/// after which they come from its per-thread arenas, which keep the memory:
/// at 10,000 running agents (a 3.4 MB envelope) under `wrk -c16` the RSS
/// went from 34 to 62 MB with the default and to 43 MB with the threshold
/// fixed, at the same throughput (BENCHMARKS.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fixed_mmap_threshold() {
    // SAFETY: mallopt only sets a parameter of the allocator; nothing else
    // runs yet, and a failure (0) leaves the default in place.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fixed_mmap_threshold();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (files, overrides) = match &cli.command {
        Some(Command::Generate { path, jobs, running, no_indexes }) => {
            init_logging(orchmirror::LogFormat::Text, "info");
            return generate(path, *jobs, *running, !*no_indexes);
        }
        Some(Command::Tune { files, db, .. }) => {
            let sub = matches.subcommand_matches("tune").unwrap_or(&matches);
            (files, overrides(sub, db.clone(), files.config.clone(), false))
        }
        None => (&cli.files, overrides(&matches, cli.db.clone(), cli.files.config.clone(), true)),
    };
    let env_file_named = matches
        .subcommand_matches("tune")
        .unwrap_or(&matches)
        .value_source("env_file")
        .is_some_and(|s| s == ValueSource::CommandLine);
    let (env, from_dotenv) = match environment(&files.env_file, env_file_named) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("orchmirror: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let read = settings_files(&files.env_file, from_dotenv.len(), files.config.as_deref(), &env);
    let overrides = overrides.with_dotenv(files.env_file.display().to_string(), from_dotenv);
    let mut settings = match load_settings(env, overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("orchmirror: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // The web configuration with the other settings, before any start-up
    // line: nothing is served on a half-valid configuration.
    if cli.command.is_none()
        && let Some(path) = &settings.web_config_file
        && let Err(e) = orchmirror::serve::http::check_web_config(path)
    {
        eprintln!(
            "orchmirror: configuration error: invalid ORCH_WEB_CONFIG_FILE={:?}: {e}",
            path.display().to_string()
        );
        return ExitCode::from(2);
    }
    // tune runs the section actors to measure them; their start-up lines are not its output.
    init_logging(settings.log_format, if cli.command.is_some() { "warn" } else { "info" });
    if let Some(Command::Tune { budget, samples, commit_rate, json, .. }) = cli.command {
        return tune(&settings, budget, samples, commit_rate, json);
    }
    let demo = match start_demo(&mut settings) {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("orchmirror: cannot start demo mode: {e}");
            return ExitCode::FAILURE;
        }
    };
    settings.log_start(&read);
    raise_fd_limit();
    let code = actix_web::rt::System::new().block_on(serve(settings));
    if let Some(demo) = demo {
        demo.shutdown();
    }
    code
}

/// The values given on the command line (not those clap read from the
/// environment for its help: the configuration layers read those).
fn overrides(matches: &ArgMatches, db: Option<PathBuf>, config: Option<PathBuf>, settings: bool) -> CliOverrides {
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    // `ids` also names the argument groups, which hold no String.
    let value = |id: &str| matches.try_get_one::<String>(id).ok().flatten().filter(|_| given(id)).cloned();
    let bind = if settings { value("bind") } else { None };
    let mut out = CliOverrides::new(db.filter(|_| given("db")), bind, config.filter(|_| given("config")));
    if settings {
        // Every other flag given is a setting whose id is its configuration key.
        let ids = matches.ids().map(|id| id.as_str()).filter(|id| !["db", "bind", "config", "env_file"].contains(id));
        for id in ids {
            if let Some(v) = value(id) {
                out = out.with(id, v);
            }
        }
    }
    out
}

/// The process environment over the dotenv file's variables (the real
/// environment wins). A missing `./.env` is no error; a named file must exist.
/// The environment, and the `ORCH_*` variables whose value came from the dotenv file.
type Environment = (Vec<(String, String)>, Vec<String>);

fn environment(env_file: &std::path::Path, named: bool) -> Result<Environment, String> {
    let mut vars = std::collections::HashMap::new();
    match orchmirror::config::read_settings_file(env_file) {
        Ok(Some(bytes)) => {
            if let Err(e) = std::str::from_utf8(&bytes) {
                let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
                return Err(format!("{}: line {line} is not valid UTF-8", env_file.display()));
            }
            for line in dotenvy::from_read_iter(bytes.as_slice()) {
                let (k, v) = line.map_err(|e| format!("{}: {e}", env_file.display()))?;
                vars.insert(k, v);
            }
        }
        Ok(None) if !named => {}
        Ok(None) => return Err(format!("cannot read --env-file {}: no such file", env_file.display())),
        Err(e) => return Err(format!("cannot read the dotenv file: {e}")),
    }
    let mut from_file: std::collections::HashSet<String> =
        vars.keys().filter(|k| k.starts_with("ORCH_")).cloned().collect();
    for (k, v) in std::env::vars_os() {
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => {
                from_file.remove(&k);
                vars.insert(k, v);
            }
            (Ok(k), Err(v)) if k.starts_with("ORCH_") => {
                return Err(format!("{k} is not valid UTF-8: {}", v.to_string_lossy()));
            }
            _ => {}
        }
    }
    Ok((vars.into_iter().collect(), from_file.into_iter().collect()))
}

/// Which settings files were read, for the start-up line: the dotenv file
/// (with how many of its settings took effect: the environment wins) and the
/// TOML file (`--config` or `ORCH_CONFIG_FILE`), or `none`.
fn settings_files(
    env_file: &std::path::Path,
    from_dotenv: usize,
    config: Option<&std::path::Path>,
    env: &[(String, String)],
) -> String {
    let mut read = Vec::new();
    if env_file.is_file() {
        read.push(format!("{} ({from_dotenv} settings)", env_file.display()));
    }
    let toml = config.map(|p| p.display().to_string()).or_else(|| {
        env.iter().find(|(k, _)| k == "ORCH_CONFIG_FILE").map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
    });
    read.extend(toml);
    if read.is_empty() { "none".to_owned() } else { read.join(", ") }
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
/// Logs at `default` level (or `RUST_LOG`) to stderr.
fn init_logging(format: orchmirror::LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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
fn load_settings(env: Vec<(String, String)>, overrides: CliOverrides) -> Result<Settings, orchmirror::ConfigError> {
    let settings = Settings::load(env, &overrides)?;
    // The binary runs the built-in sections only: a period for any other is a typo.
    settings.refresh.check(orchmirror::SectionName::BUILT_IN)?;
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

/// Starts the mirror and serves it until SIGTERM, SIGINT or SIGHUP.
async fn serve(settings: Settings) -> ExitCode {
    match orchmirror::serve::run(&settings, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orchmirror: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM, SIGINT or SIGHUP (a closed terminal, `kill -HUP`):
/// each stops the server cleanly, so answers in flight finish, demo mode
/// removes its database and a Unix socket file is removed. The signals are
/// taken here, not by the library: a host application keeps its own.
async fn shutdown_signal() {
    use actix_web::rt::signal::unix::{SignalKind, signal};
    let (term, hup) = (signal(SignalKind::terminate()), signal(SignalKind::hangup()));
    let (mut term, mut hup) = match (term, hup) {
        (Ok(t), Ok(h)) => (t, h),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM and SIGHUP; only Ctrl-C stops the server");
            let _ = actix_web::rt::signal::ctrl_c().await;
            tracing::info!(signal = "SIGINT", "signal received");
            return;
        }
    };
    tracing::debug!("listening for SIGTERM, SIGINT and SIGHUP");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
        _ = actix_web::rt::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!(signal = name, "signal received");
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

fn tune(settings: &Settings, budget: f64, samples: u16, commit_rate: f64, json: bool) -> ExitCode {
    let Some(path) = settings.db_path.as_deref() else {
        eprintln!("orchmirror: tune needs a database: --db PATH or ORCH_DB_PATH");
        return ExitCode::from(2);
    };
    // The measurements start actix systems, whose runtime takes SIGINT from
    // the default action: a Ctrl-C would be ignored. Here SIGINT, SIGTERM and
    // SIGHUP remove the scratch copies and end the process, as a person expects.
    let spawned = std::thread::Builder::new().name("orchmirror-tune-signals".into()).spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let code = rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
            else {
                return None;
            };
            tokio::select! {
                _ = int.recv() => Some(130),
                _ = term.recv() => Some(143),
                _ = hup.recv() => Some(129),
            }
        });
        if let Some(code) = code {
            orchmirror::tools::tune::remove_scratch();
            eprintln!("\norchmirror: tune interrupted; its scratch copies are removed");
            std::process::exit(code);
        }
    });
    if let Err(e) = spawned {
        eprintln!("orchmirror: cannot watch for signals ({e}); an interrupted tune may leave scratch copies");
    }
    let mut opts = orchmirror::tools::tune::Options::default();
    opts.budget_percent = budget;
    opts.samples = usize::from(samples);
    opts.commit_rate = commit_rate;
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
