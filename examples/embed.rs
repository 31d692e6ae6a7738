//! A host actix-web application embedding orchmirror:
//! its own route, the mirror's routes beside it, a worker probe with a fake
//! breaker, and a subscriber actor that logs queue depth changes (its own
//! small database, when it makes one, changes every second or two).
//!
//! `cargo run --example embed` (a small database of its own unless
//! `ORCH_DB_PATH` is set; listens on `ORCH_BIND`, default 127.0.0.1:8787).
//! It uses only the library's API, so it builds with
//! `default-features = false` as an embedder's application would.

use std::cell::Cell;
use std::rc::Rc;

use actix::prelude::*;
use actix_web::{App, HttpResponse, HttpServer, web};
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;
use orchmirror::Update;
use orchmirror::section::Queue;
use orchmirror::{CliOverrides, MirrorHandle, SectionName, Settings};
use orchmirror::{ProbeResult, WorkerProbe};

/// The host's worker, as far as the mirror is concerned.
struct HostWorker {
    ticks: Rc<Cell<u64>>,
}

impl WorkerProbe for HostWorker {
    fn breaker(&self) -> LocalBoxFuture<'static, ProbeResult> {
        // A breaker that trips open every 30 probes, for something to watch.
        let n = self.ticks.get() + 1;
        self.ticks.set(n);
        let state = if n % 30 < 5 { "open" } else { "closed" };
        async move { Ok(serde_json::json!({ "state": state, "consecutive_failures": n % 30 })) }.boxed_local()
    }
    fn max_concurrency(&self) -> LocalBoxFuture<'static, ProbeResult> {
        async { Ok(serde_json::json!(3)) }.boxed_local()
    }
    fn poll_interval(&self) -> LocalBoxFuture<'static, ProbeResult> {
        async { Ok(serde_json::json!(2.0)) }.boxed_local()
    }
}

/// Logs the queue depth whenever the queue section changes.
struct DepthLogger {
    last: Option<u64>,
}

impl Actor for DepthLogger {
    type Context = Context<Self>;
}

impl Handler<Update> for DepthLogger {
    type Result = ();
    fn handle(&mut self, update: Update, _: &mut Self::Context) {
        if let Some(q) = update.data.get::<Queue>()
            && self.last != Some(q.depth)
        {
            println!(
                "queue depth {} -> {} (seq {})",
                self.last.map_or("?".into(), |d| d.to_string()),
                q.depth,
                update.seq
            );
            self.last = Some(q.depth);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host decides where settings come from; here, the same ORCH_* environment.
    let mut settings = Settings::load(std::env::vars(), &CliOverrides::default())?;
    // Without ORCH_DB_PATH, a small orchestrator database of its own.
    let _dir = match settings.db_path {
        Some(_) => None,
        None => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("orchestrator.db");
            let db = rusqlite::Connection::open(&path)?;
            db.execute_batch(orchmirror::SCHEMA_SQL)?;
            db.execute_batch(
                "INSERT INTO tasks (work_item_id, repo, stage) VALUES ('ORCH-1', 'core', 'review');
                 INSERT INTO jobs (agent, status) VALUES ('developer', 'queued'), ('reviewer', 'queued');",
            )?;
            println!("a small database at {}", path.display());
            // The host's "orchestrator": a job queued every 2 s, the oldest
            // queued one started every 3 s, so the subscriber has changes to print.
            let writer = rusqlite::Connection::open(&path)?;
            std::thread::spawn(move || {
                for tick in 1u64.. {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    let sql = match (tick % 2, tick % 3) {
                        (0, _) => "INSERT INTO jobs (agent, status) VALUES ('developer', 'queued')",
                        (_, 0) => {
                            "UPDATE jobs SET status = 'running', started_at = datetime('now') \
                             WHERE id = (SELECT MIN(id) FROM jobs WHERE status = 'queued')"
                        }
                        _ => continue,
                    };
                    if let Err(e) = writer.execute(sql, []) {
                        eprintln!("the example's writer stopped: {e}");
                        return;
                    }
                }
            });
            settings.db_path = Some(path);
            Some(dir)
        }
    };

    actix_web::rt::System::new().block_on(async move {
        let mirror =
            MirrorHandle::builder(settings.clone()).worker_probe(HostWorker { ticks: Rc::default() }).start()?;
        let logger = DepthLogger { last: None }.start();
        mirror.subscribe(SectionName::QUEUE, logger.recipient());

        // Made once, outside the per-worker factory: every worker shares its streams.
        let routes = orchmirror::Routes::new(mirror.clone(), &settings);
        println!(
            "listening on http://{}  (routes: /hello, /, /metrics, /metrics/stream, /metrics/prometheus, /health, \
             /readyz, /livez)",
            settings.bind
        );
        HttpServer::new(move || {
            App::new()
                .route("/hello", web::get().to(|| async { HttpResponse::Ok().body("the host's own route\n") }))
                .configure(routes.config())
        })
        .bind(&settings.bind)?
        .run()
        .await?;
        mirror.stop();
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
