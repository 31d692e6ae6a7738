//! Envelope assembly from four cached sections: what one `/metrics` request
//! costs once the actors have answered (render with ages + serialise).
//!
//! `cargo bench --bench envelope`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use actix::MailboxError;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use orchmirror::Section;
use orchmirror::section::{Agents, Cost, Queue, Stages};
use orchmirror::test_util::Answer;
use orchmirror::test_util::SectionReply;
use orchmirror::test_util::{Clock, assemble};
use rusqlite::Connection;

/// A database with `agents` running jobs (each with a run), 50 active tasks and some history.
fn database(agents: usize) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.sqlite");
    let conn = Connection::open(&path).expect("open");
    orchmirror::test_util::register_functions(&conn).expect("functions");
    conn.execute_batch(orchmirror::SCHEMA_SQL).expect("schema");
    conn.execute_batch(orchmirror::SCHEMA_INDEXES_SQL).expect("indexes");
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
         INSERT INTO tasks (work_item_id, repo, stage, updated_at)
              SELECT 'ORCH-' || i, 'core', 'review', datetime('now', '-' || i || ' minutes') FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {agents})
         INSERT INTO jobs (agent, repo, status, attempts, started_at)
              SELECT 'developer', 'core', 'running', 1 + i % 3, datetime('now', '-' || i || ' seconds') FROM n;
         INSERT INTO agent_runs (job_id, agent, model, effort, cost_usd, input_tokens, output_tokens)
              SELECT id, agent, 'model', 'high', 0.5, 1000, 200 FROM jobs;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
         INSERT INTO jobs (agent, status, attempts) SELECT 'tester', 'done', 1 FROM n;"
    ))
    .expect("rows");
    (dir, conn)
}

/// What a section actor answers: its cached data behind an `Arc`.
fn ok<D>(data: &Arc<D>) -> Result<SectionReply<D>, MailboxError> {
    Ok(SectionReply::ok(Arc::clone(data), chrono::Utc::now(), 1))
}

fn envelope_assembly(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_assembly");
    for agents in [0usize, 10, 1000] {
        let (_dir, conn) = database(agents);
        let stages = Stages.load(&conn).expect("stages");
        let queue = Queue::new().load(&conn).expect("queue");
        let running = Agents::new(Duration::from_secs(10)).load(&conn).expect("agents");
        let cost = Cost::new().load(&conn).expect("cost");
        let stages = Arc::new(stages);
        let queue = Arc::new(queue);
        let running = Arc::new(running);
        let cost = Arc::new(cost);
        let replies = || {
            vec![
                Answer::of::<Stages>(ok(&stages)),
                Answer::of::<Queue>(ok(&queue)),
                Answer::of::<Agents>(ok(&running)),
                Answer::of::<Cost>(ok(&cost)),
            ]
        };
        let bytes = serde_json::to_vec(&assemble(replies(), Clock::now(), Duration::from_millis(200)))
            .expect("serialise")
            .len();
        eprintln!("envelope_assembly/{agents}: body {bytes} bytes");
        group.throughput(criterion::Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("render_and_serialise", agents), &agents, |b, _| {
            b.iter_batched(
                replies,
                |r| {
                    let env = assemble(r, Clock::now(), Duration::from_millis(200));
                    black_box(serde_json::to_vec(&env).expect("serialise"))
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, envelope_assembly);
criterion_main!(benches);
