//! A host registering a section of its own beside the four built-in ones:
//! its worker pool (`workers.rs`), served as an envelope key after `cost`,
//! in `sections`, `/health`, subscriptions and the exposition, refreshed every
//! `ORCH_WORKERS_REFRESH_MS`.
//!
//! `ORCH_DB_PATH=orchestrator.db cargo run --example custom_section`
//! (without `ORCH_DB_PATH` it makes an empty database in a temporary
//! directory), then `curl -s http://127.0.0.1:8787/metrics | jq .workers`.

mod workers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchmirror::{CliOverrides, MirrorHandle, SectionName, Settings};
use workers::{Pool, Workers};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut settings = Settings::load(std::env::vars(), &CliOverrides::default())?;
    let _dir = match &settings.db_path {
        Some(_) => None,
        None => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("orchestrator.db");
            rusqlite::Connection::open(&path)?.execute_batch(orchmirror::SCHEMA_SQL)?;
            settings.db_path = Some(path);
            Some(dir)
        }
    };
    // The host's sections are the built-in ones plus its own.
    let mut known = SectionName::BUILT_IN.to_vec();
    known.push(SectionName::new("workers"));
    settings.refresh.check(&known)?;

    let pool = Arc::new(Mutex::new(Pool { size: 4, busy: 0 }));
    actix_web::rt::System::new().block_on(async move {
        let mirror = MirrorHandle::builder(settings.clone()).section(Workers(Arc::clone(&pool))).start()?;
        // The host's work: the pool gets busier and quieter.
        actix_web::rt::spawn(async move {
            for tick in 0u32.. {
                pool.lock().unwrap_or_else(|p| p.into_inner()).busy = tick % 5;
                actix_web::rt::time::sleep(Duration::from_millis(500)).await;
            }
        });
        // The library takes no signal: the host says when to stop (here Ctrl-C).
        let ctrl_c = async {
            let _ = actix_web::rt::signal::ctrl_c().await;
        };
        let (server, addrs) = orchmirror::serve::http::server(&settings, mirror.clone(), ctrl_c)?;
        for addr in addrs {
            println!("listening on http://{addr}/metrics");
        }
        server.await?;
        mirror.stop();
        Ok(())
    })
}
