//! A section whose refresh panics: the actor survives, reports it, and recovers.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::Actor;
use chrono::{DateTime, Utc};
use orchmirror::section::LoadError;
use orchmirror::test_util::Database;
use orchmirror::test_util::Snapshot;
use orchmirror::test_util::{ActorSettings, SectionActor};
use orchmirror::{Section, SectionName, Status};
use rusqlite::Connection;
use support::wait_until;

/// Counts tasks; panics while `PANIC` is set.
struct Flaky {
    panic: Arc<AtomicBool>,
}

impl Section for Flaky {
    const NAME: SectionName = SectionName::new("flaky");
    type Data = i64;
    type View = i64;
    const STATEMENTS: &'static [&'static str] = &["SELECT COUNT(*) FROM tasks"];

    fn load(&self, conn: &Connection) -> Result<i64, LoadError> {
        assert!(!self.panic.load(Ordering::SeqCst), "injected panic in load");
        Ok(conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))?)
    }

    fn view(data: &i64, _: DateTime<Utc>) -> i64 {
        *data
    }
}

#[test]
fn a_panicking_refresh_is_an_error_not_a_dead_actor() {
    let fx = support::Fixture::new();
    fx.exec("INSERT INTO tasks (work_item_id, stage) VALUES ('A', 'x');");
    let panic = Arc::new(AtomicBool::new(true));
    let section = Arc::new(Flaky { panic: Arc::clone(&panic) });
    let db = Arc::new(Database::new(&fx.path));
    let settings = ActorSettings {
        coalesce: Duration::from_millis(20),
        period: Duration::from_millis(50),
        max_stale: Duration::from_secs(30),
        reconcile: Duration::from_secs(300),
        budget: Arc::new(orchmirror::test_util::Budget::new(100.0)),
    };

    actix_web::rt::System::new().block_on(async move {
        let addr = SectionActor::new(section, db, settings).start();
        let ask = || addr.send(Snapshot::<i64>::new());
        wait_until("the panic reported", Duration::from_secs(5), async || {
            ask().await.expect("answers").status == Status::Error
        })
        .await;
        let reply = ask().await.expect("answers");
        assert_eq!(reply.status, Status::Error);
        assert!(reply.error.as_deref().is_some_and(|e| e.contains("panicked")), "{:?}", reply.error);
        assert!(addr.connected(), "the actor survived the panic");

        panic.store(false, Ordering::SeqCst);
        wait_until("recovery", Duration::from_secs(5), async || ask().await.expect("answers").status == Status::Ok)
            .await;
        let reply = ask().await.expect("answers");
        assert_eq!(reply.status, Status::Ok);
        assert_eq!(reply.data.as_deref(), Some(&1));
    });
}
