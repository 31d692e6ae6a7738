//! A host actix-web application embedding orchmirror:
//! its own route, the mirror's routes beside it, a worker probe with a fake
//! breaker, and a subscriber actor that logs queue depth changes.
//!
//! `cargo run --example embed` (demo database unless `ORCH_DB_PATH` is set;
//! listens on `ORCH_BIND`, default 127.0.0.1:8787).

use std::cell::Cell;
use std::rc::Rc;

use actix::prelude::*;
use actix_web::{App, HttpResponse, HttpServer, web};
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;
use orchmirror::Update;
use orchmirror::section::Queue;
use orchmirror::tools::demo::Demo;
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
    let demo = match settings.db_path {
        Some(_) => None,
        None => {
            let demo = Demo::start()?;
            println!("demo database at {}", demo.path().display());
            settings.db_path = Some(demo.path().to_path_buf());
            Some(demo)
        }
    };

    let result = actix_web::rt::System::new().block_on(async move {
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
    });
    if let Some(demo) = demo {
        demo.shutdown();
    }
    result
}
