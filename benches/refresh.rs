//! Refresh cost of each section at 1k, 100k and 1M jobs, with and without the
//! schema's indexes; the raw SQL alone; an unchanged refresh; and the seed's
//! design (every request queries the database) against the mirror (every
//! request renders cached sections).
//!
//! `cargo bench --bench refresh` (sizes: `ORCHMIRROR_BENCH_SIZES=1000,100000,1000000`).
//! Databases are generated once into `target/bench-data/`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use orchmirror::Section;
use orchmirror::section::{Agents, Cost, Queue, Stages};
use orchmirror::test_util::Answer;
use orchmirror::test_util::SectionReply;
use orchmirror::test_util::{Clock, assemble};
use orchmirror::test_util::{Database, MAX_SAFE_INTEGER};
use orchmirror::tools::generate::{Spec, generate};

fn sizes() -> Vec<u64> {
    std::env::var("ORCHMIRROR_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000, 1_000_000])
}

fn database(jobs: u64, indexes: bool) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    let _ = std::fs::create_dir_all(&dir);
    // "history2": a production-like history (unfinished runs of ended jobs, earlier runs of retried jobs).
    let path = dir.join(format!("history2-{jobs}-{}.sqlite", if indexes { "indexed" } else { "bare" }));
    if !path.exists() {
        generate(&path, &Spec::jobs(jobs).indexes(indexes)).expect("generate bench database");
    }
    path
}

const DEADLINE: Duration = Duration::from_secs(600);

fn load<S: Section>(db: &Database, section: &S) -> S::Data {
    db.with_conn(DEADLINE, |c, _| section.load(c)).expect("load")
}

/// The section's statements alone: step through every row, convert nothing.
fn raw_sql<S: Section>(db: &Database) -> usize {
    db.with_conn(DEADLINE, |c, _| {
        let mut n = 0;
        for sql in S::STATEMENTS {
            let mut stmt = c.prepare_cached(sql)?;
            let mut rows = if stmt.parameter_count() == 1 { stmt.query([MAX_SAFE_INTEGER])? } else { stmt.query([])? };
            while rows.next()?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    })
    .expect("raw sql")
}

fn ok<D>(data: D) -> Result<SectionReply<D>, actix::MailboxError> {
    cached_reply(&Arc::new(data))
}

/// What a section actor answers: its cached data behind an `Arc`.
fn cached_reply<D>(data: &Arc<D>) -> Result<SectionReply<D>, actix::MailboxError> {
    Ok(SectionReply::ok(Arc::clone(data), chrono::Utc::now(), 1))
}

fn section_bench<S: Section>(c: &mut Criterion, group: &str, section: &S, db: &Database, id: &str) {
    let mut g = c.benchmark_group(format!("{group}/{}", S::NAME));
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g.bench_function(BenchmarkId::new("load", id), |b| b.iter(|| black_box(load(db, section))));
    g.bench_function(BenchmarkId::new("raw_sql", id), |b| b.iter(|| black_box(raw_sql::<S>(db))));
    g.finish();
}

/// A handful of the orchestrator's pattern writes: a job queued, one started
/// with its run, the oldest unfinished run finished, a task moved on.
fn pattern_writes(writer: &rusqlite::Connection) {
    writer
        .execute_batch(
            "BEGIN;
             INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');
             UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = datetime('now')
              WHERE id = (SELECT MIN(id) FROM jobs WHERE status = 'queued');
             INSERT INTO agent_runs (job_id, agent)
                  SELECT MAX(id), 'dev' FROM jobs WHERE status = 'running';
             UPDATE agent_runs SET finished_at = datetime('now'), cost_usd = 0.25, input_tokens = 1000
              WHERE id = (SELECT MIN(id) FROM agent_runs WHERE finished_at IS NULL);
             UPDATE tasks SET updated_at = datetime('now') WHERE id = (SELECT MAX(id) FROM tasks);
             COMMIT;",
        )
        .expect("pattern writes");
}

/// A changed refresh: the section's incremental path after a few pattern
/// writes (on a copy of the database), against its full queries.
fn changed_bench<S: Section>(c: &mut Criterion, section: &S, path: &std::path::Path, id: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("changed.sqlite");
    std::fs::copy(path, &copy).expect("copy");
    let writer = rusqlite::Connection::open(&copy).expect("writer");
    let db = Database::new(&copy);
    db.with_conn(DEADLINE, |c, _| section.refresh(c)).expect("first refresh builds the state");
    let mut g = c.benchmark_group(format!("changed/{}", S::NAME));
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::new("incremental", id), |b| {
        b.iter_batched(
            || pattern_writes(&writer),
            |()| black_box(db.with_conn(DEADLINE, |c, _| section.refresh(c)).expect("refresh")),
            criterion::BatchSize::PerIteration,
        )
    });
    g.bench_function(BenchmarkId::new("reconcile", id), |b| {
        b.iter(|| {
            section.forget();
            black_box(db.with_conn(DEADLINE, |c, _| section.refresh(c)).expect("rebuild"))
        })
    });
    g.finish();
}

/// A changed refresh in WAL mode, told which rows the commit can have
/// touched (the `-wal`'s frames since the last refresh), after one statement
/// group of the orchestrator's pattern touching rows anywhere in history
/// (`tools::pattern`), on a copy of the database.
fn wal_frames_bench<S: Section>(c: &mut Criterion, section: &S, path: &std::path::Path, id: &str) {
    use orchmirror::section::Changes;
    use orchmirror::tools::pattern::PatternWriter;
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("wal.sqlite");
    std::fs::copy(path, &copy).expect("copy");
    let conn = rusqlite::Connection::open(&copy).expect("writer");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    let mut writer = PatternWriter::new(conn, 5);
    writer.commit().expect("a first commit: a WAL with frames");
    let db = Database::new(&copy);
    let seen = std::cell::Cell::new(
        db.with_conn(DEADLINE, |c, f| section.refresh_since(c, &Changes::Unknown).map(|_| f)).expect("first refresh"),
    );
    let mut g = c.benchmark_group(format!("changed/{}", S::NAME));
    g.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::new("wal_frames", id), |b| {
        b.iter_batched(
            || {
                writer.commit().expect("pattern commit");
            },
            |()| {
                let now = db
                    .with_conn(DEADLINE, |c, now| {
                        let changes = db.changes_since(&seen.get(), &now);
                        black_box(section.refresh_since(c, &changes)?);
                        Ok(now)
                    })
                    .expect("refresh");
                seen.set(now);
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn changed(c: &mut Criterion) {
    for jobs in sizes() {
        let path = database(jobs, true);
        let id = jobs.to_string();
        changed_bench(c, &Stages, &path, &id);
        changed_bench(c, &Queue::new(), &path, &id);
        changed_bench(c, &Agents::new(Duration::from_secs(10)), &path, &id);
        changed_bench(c, &Cost::new(), &path, &id);
        wal_frames_bench(c, &Stages, &path, &id);
        wal_frames_bench(c, &Queue::new(), &path, &id);
        wal_frames_bench(c, &Agents::new(Duration::from_secs(10)), &path, &id);
        wal_frames_bench(c, &Cost::new(), &path, &id);
    }
}

fn refresh(c: &mut Criterion) {
    let agents = Agents::new(Duration::from_secs(10));
    for jobs in sizes() {
        for indexes in [true, false] {
            let path = database(jobs, indexes);
            let id = format!("{jobs}-{}", if indexes { "indexed" } else { "bare" });
            let dbs: Vec<Database> = (0..4).map(|_| Database::new(&path)).collect();
            section_bench(c, "refresh", &Stages, &dbs[0], &id);
            section_bench(c, "refresh", &Queue::new(), &dbs[1], &id);
            section_bench(c, "refresh", &agents, &dbs[2], &id);
            section_bench(c, "refresh", &Cost::new(), &dbs[3], &id);

            let mut g = c.benchmark_group("per_request");
            g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
            // The seed's design: every request runs every query, then renders.
            g.bench_function(BenchmarkId::new("seed_queries_every_request", &id), |b| {
                b.iter(|| {
                    let replies = vec![
                        Answer::of::<Stages>(ok(load(&dbs[0], &Stages))),
                        Answer::of::<Queue>(ok(load(&dbs[1], &Queue::new()))),
                        Answer::of::<Agents>(ok(load(&dbs[2], &agents))),
                        Answer::of::<Cost>(ok(load(&dbs[3], &Cost::new()))),
                    ];
                    black_box(serde_json::to_vec(&assemble(replies, Clock::now(), DEADLINE)).expect("json"))
                })
            });
            // The mirror: the actors hold the data; a request renders it.
            let cached = (
                Arc::new(load(&dbs[0], &Stages)),
                Arc::new(load(&dbs[1], &Queue::new())),
                Arc::new(load(&dbs[2], &agents)),
                Arc::new(load(&dbs[3], &Cost::new())),
            );
            g.bench_function(BenchmarkId::new("mirror_cached_sections", &id), |b| {
                b.iter(|| {
                    let replies = vec![
                        Answer::of::<Stages>(cached_reply(&cached.0)),
                        Answer::of::<Queue>(cached_reply(&cached.1)),
                        Answer::of::<Agents>(cached_reply(&cached.2)),
                        Answer::of::<Cost>(cached_reply(&cached.3)),
                    ];
                    black_box(serde_json::to_vec(&assemble(replies, Clock::now(), DEADLINE)).expect("json"))
                })
            });
            // A refresh that finds nothing committed: the file's identity and a
            // reading of its WAL index or change counter, no connection.
            let seen = dbs[1].with_conn(DEADLINE, |_, f| Ok(f)).expect("fingerprint");
            g.bench_function(BenchmarkId::new("unchanged_refresh", &id), |b| {
                b.iter(|| black_box(dbs[1].unchanged_since(&seen)))
            });
            // What every refresh that runs queries now pays first: a new connection.
            g.bench_function(BenchmarkId::new("open_connection", &id), |b| {
                b.iter(|| black_box(dbs[1].with_conn(DEADLINE, |_, f| Ok(f)).expect("fingerprint")))
            });
            g.finish();
        }
    }
}

criterion_group!(benches, changed, refresh);
criterion_main!(benches);
