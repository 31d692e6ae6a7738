//! Demo mode: a throw-away orchestrator database with a realistic, changing
//! workload, and real child processes behind the running agents.
//!
//! The simulator plays the orchestrator: it is the only writer of its own
//! temporary file. The mirror reads that file exactly as it would a real one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use crate::tools::orchestrator::{self as orch, Agent, Ended, RunCost};
use crate::{SCHEMA_INDEXES_SQL, SCHEMA_SQL};

/// How often the simulator changes the database.
pub const TICK: Duration = Duration::from_millis(1000);
/// How many agents run at once.
pub const MAX_RUNNING: usize = 3;

/// Why demo mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The temporary directory could not be made.
    #[error("cannot create the demo directory: {0}")]
    Io(#[from] std::io::Error),
    /// The database could not be created or seeded.
    #[error("cannot create the demo database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A running demo: the temporary database, its simulator and the agent processes.
/// Dropping it (or [`Demo::shutdown`]) ends the processes and removes the file.
#[derive(Debug)]
pub struct Demo {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
}

impl Demo {
    /// Creates and seeds the database, starts the agent processes and the simulator.
    pub fn start() -> Result<Demo, DemoError> {
        let dir = tempfile::Builder::new().prefix("orchmirror-demo-").tempdir()?;
        let path = dir.path().join("orchestrator.sqlite");
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA_SQL)?;
        conn.execute_batch(SCHEMA_INDEXES_SQL)?;
        let mut sim =
            Simulator { conn, rng: fastrand::Rng::with_seed(0x0c4e_57a7), agents: HashMap::new(), next_item: 100 };
        sim.seed()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new().name("orchmirror-demo".into()).spawn(move || sim.run(&stop))?
        };
        Ok(Demo { path, stop, thread: Some(thread), dir: Some(dir) })
    }

    /// The demo database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the simulator, ends the agent processes and removes the database.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(dir) = self.dir.take() {
            let shown = dir.path().display().to_string();
            match dir.close() {
                Ok(()) => tracing::info!(dir = %shown, "demo database removed"),
                Err(e) => {
                    tracing::warn!(dir = %shown, error = %e, "could not remove the demo database")
                }
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A stand-in agent: burns a little CPU so `cpu_ticks` moves, and exits on its
/// own if the mirror dies without cleaning up (its parent pid goes away).
fn spawn_agent() -> std::io::Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(
            r#"while kill -0 "$PPID" 2>/dev/null; do i=0; while [ $i -lt 4000 ]; do i=$((i+1)); done; sleep 0.2; done"#,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

const AGENTS: [&str; 4] = ["analyst", "developer", "reviewer", "tester"];
const REPOS: [&str; 3] = ["core", "web", "infra"];
const MODELS: [&str; 2] = ["claude-opus", "claude-sonnet"];
const EFFORTS: [&str; 3] = ["low", "medium", "high"];

struct RunningAgent {
    child: Child,
    run_id: i64,
    ends_at: Instant,
}

struct Simulator {
    conn: Connection,
    rng: fastrand::Rng,
    agents: HashMap<i64, RunningAgent>,
    next_item: i64,
}

impl Simulator {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.usize(..from.len())]
    }

    /// History: tasks in every stage, finished jobs in every status with
    /// retries and costs (some never parsed: NULL), a few queued jobs.
    fn seed(&mut self) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for i in 0..40i64 {
            seed_task(&tx, i)?;
        }
        queue_active(&tx)?;
        tx.commit()?;
        for _ in 0..MAX_RUNNING {
            self.start_next()?;
        }
        Ok(())
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut next = Instant::now() + TICK;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            if Instant::now() < next {
                continue;
            }
            next += TICK;
            if let Err(e) = self.tick() {
                tracing::warn!(error = %e, "demo simulator step failed");
            }
        }
        for (_, mut a) in self.agents.drain() {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
    }

    fn tick(&mut self) -> rusqlite::Result<()> {
        // Finish agents whose time is up.
        let now = Instant::now();
        let due: Vec<i64> = self.agents.iter().filter(|(_, a)| a.ends_at <= now).map(|(j, _)| *j).collect();
        for job_id in due {
            self.finish(job_id)?;
        }
        while self.agents.len() < MAX_RUNNING {
            if !self.start_next()? {
                break;
            }
        }
        // New work arrives now and then; tasks move through their stages.
        // About as fast as three agents clear them, so the queue neither drains nor grows for ever.
        if self.rng.u8(..100) < 15 {
            self.new_task()?;
        }
        if self.rng.u8(..100) < 30 {
            // The task longest in its stage that no job is working on moves on.
            let idle: Option<i64> = self
                .conn
                .query_row(
                    "SELECT id FROM tasks WHERE stage NOT IN ('done', 'cancelled')
                        AND id NOT IN (SELECT task_id FROM jobs WHERE status IN ('queued', 'running'))
                      ORDER BY updated_at LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(task) = idle {
                orch::advance(&self.conn, task)?;
            }
        }
        Ok(())
    }

    fn new_task(&mut self) -> rusqlite::Result<()> {
        self.next_item += 1;
        let repo = self.pick(&REPOS);
        let agent = self.pick(&AGENTS);
        let tx = self.conn.transaction()?;
        let task = orch::new_task(&tx, &format!("ORCH-{}", self.next_item), repo)?;
        orch::enqueue(&tx, Some(task), repo, agent)?;
        tx.commit()
    }

    /// Starts the oldest queued job with a real process; false when none is queued.
    fn start_next(&mut self) -> rusqlite::Result<bool> {
        let next: Option<i64> = self
            .conn
            .query_row("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1", [], |r| r.get(0))
            .optional()?;
        let Some(job_id) = next else {
            return Ok(false);
        };
        let child = match spawn_agent() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "demo cannot spawn an agent process");
                return Ok(false);
            }
        };
        let (model, effort) = (self.pick(&MODELS), self.pick(&EFFORTS));
        let tx = self.conn.transaction()?;
        let run_id = orch::start(&tx, job_id, Agent { pid: Some(child.id()), model, effort })?;
        tx.commit()?;
        let ends_at = Instant::now() + Duration::from_secs(self.rng.u64(8..25));
        self.agents.insert(job_id, RunningAgent { child, run_id, ends_at });
        Ok(true)
    }

    /// Ends an agent: most succeed, some fail and are queued again (a retry).
    fn finish(&mut self, job_id: i64) -> rusqlite::Result<()> {
        let Some(mut agent) = self.agents.remove(&job_id) else {
            return Ok(());
        };
        let _ = agent.child.kill();
        let _ = agent.child.wait();
        let failed = self.rng.u8(..100) < 20;
        let input = self.rng.i64(5_000..80_000);
        let cost = RunCost {
            usd: Some(input as f64 * 0.000_015),
            tokens: [input, input / 8, input * 2, input / 40].map(Some),
        };
        let tx = self.conn.transaction()?;
        orch::finish_run(&tx, agent.run_id, &cost)?;
        if failed {
            // A retry: back in the queue, attempts kept, so the next run makes it > 1.
            orch::requeue(&tx, job_id)?;
        } else {
            orch::end(&tx, job_id, Ended::Done)?;
        }
        tx.commit()
    }
}

/// The `i`-th task of the demo's history, with its finished job and run when it has one.
fn seed_task(tx: &rusqlite::Transaction<'_>, i: i64) -> rusqlite::Result<()> {
    let stage = if i < 28 {
        "done"
    } else if i < 30 {
        "cancelled"
    } else {
        orch::STAGES[(i % 4) as usize]
    };
    let (item, repo) = (format!("ORCH-{:03}", i + 1), REPOS[(i % 3) as usize]);
    let mins = 600 - i * 12;
    tx.execute(
        "INSERT INTO tasks (work_item_id, repo, stage, created_at, updated_at)
             VALUES (?1, ?2, ?3, datetime('now', ?4), datetime('now', ?5))",
        params![item, repo, stage, format!("-{} minutes", mins + 30), format!("-{} minutes", mins.max(1))],
    )?;
    let task_id = tx.last_insert_rowid();
    let status = match i % 10 {
        7 => "failed",
        8 if i < 30 => "cancelled",
        _ if i < 30 => "done",
        _ => return Ok(()),
    };
    let attempts = if i % 6 == 0 { 2 + i % 2 } else { 1 };
    tx.execute(
        "INSERT INTO jobs (task_id, repo, agent, status, attempts, created_at, started_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, datetime('now', ?6), datetime('now', ?7), datetime('now', ?8))",
        params![
            task_id,
            repo,
            AGENTS[(i % 4) as usize],
            status,
            attempts,
            format!("-{} minutes", mins + 20),
            format!("-{} minutes", mins + 15),
            format!("-{} minutes", mins)
        ],
    )?;
    let job_id = tx.last_insert_rowid();
    let parsed = i % 9 != 4;
    tx.execute(
        "INSERT INTO agent_runs (job_id, agent, pid, model, effort, started_at, finished_at,
                                     cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens)
             VALUES (?1, ?2, ?3, ?4, ?5, datetime('now', ?6), datetime('now', ?7), ?8, ?9, ?10, ?11, ?12)",
        params![
            job_id,
            AGENTS[(i % 4) as usize],
            30_000 + i,
            MODELS[(i % 2) as usize],
            EFFORTS[(i % 3) as usize],
            format!("-{} minutes", mins + 15),
            format!("-{} minutes", mins),
            parsed.then_some(0.05 + (i as f64) * 0.031),
            parsed.then_some(20_000 + i * 1_000),
            parsed.then_some(3_000 + i * 100),
            parsed.then_some(50_000 + i * 500),
            parsed.then_some(1_000 + i * 10)
        ],
    )?;
    Ok(())
}

/// A queued job for every active task (they wait for an agent).
fn queue_active(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let active: Vec<(i64, String)> = {
        let mut stmt = tx.prepare("SELECT id, repo FROM tasks WHERE stage NOT IN ('done', 'cancelled') ORDER BY id")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
    };
    for (n, (task_id, repo)) in active.iter().enumerate() {
        tx.execute(
            "INSERT INTO jobs (task_id, repo, agent, status, attempts, created_at)
             VALUES (?1, ?2, ?3, 'queued', 0, datetime('now', ?4))",
            params![task_id, repo, AGENTS[n % 4], format!("-{} seconds", 30 + n * 20)],
        )?;
    }
    Ok(())
}
