//! `orchmirror tune` through the binary: its advice keeps to the budget and
//! the floor it states, and the lines it says to paste are settings the
//! mirror accepts.

use crate::support;

use serde_json::Value;
use support::Binary;

fn generated(jobs: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orch.sqlite");
    let out =
        Binary::command(&[]).arg("generate").arg(&db).args(["--jobs", &jobs.to_string()]).output().expect("generate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (dir, db)
}

fn tune(db: &std::path::Path, args: &[&str]) -> std::process::Output {
    Binary::command(&[]).arg("tune").arg("--db").arg(db).args(["--samples", "3"]).args(args).output().expect("tune")
}

fn tune_json(db: &std::path::Path, budget: &str) -> Value {
    let out = tune(db, &["--json", "--budget", budget]);
    assert!(out.status.success(), "tune: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("tune --json prints JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn on_one_two_five(ms: u64) -> bool {
    let mut decade = 1;
    while decade <= ms {
        if [1, 2, 5].iter().any(|s| s * decade == ms) {
            return true;
        }
        decade *= 10;
    }
    false
}

/// Every period is at least the floor, on the 1-2-5 series, and pays for
/// its refreshes (fixed cost included) within the section's share; the
/// coalescing gap is the one measured under commits; the expected figures
/// are within the budget; the database is left as it was.
#[test]
fn tune_advice_keeps_to_its_budget_and_floor() {
    let (_dir, db) = generated(20_000);
    let before = std::fs::read(&db).expect("read");
    for budget in ["2", "0.5"] {
        let r = tune_json(&db, budget);
        let budget: f64 = budget.parse().expect("number");
        // The database sits in a directory the watch can follow: commits wake the sections.
        assert_eq!(r["wake"]["mode"], "commit", "{r}");
        assert_eq!(r["floor_ms"], 1000, "{r}");
        let runtime = &r["runtime"];
        assert!(
            f(&runtime["refreshes"]) > 0.0 && f(&runtime["refresh_ms"]) > 0.0,
            "the running mirror was measured: {r}"
        );
        assert!(f(&runtime["fixed_ms"]) <= f(&runtime["refresh_ms"]), "{r}");
        let share = f(&r["share_percent"]) / 100.0;
        assert!(share > 0.0, "{r}");
        let sections = r["sections"].as_array().expect("sections");
        assert_eq!(sections.len(), 4, "{r}");
        for s in sections {
            let period = s["recommended_period_ms"].as_u64().expect("period");
            assert!(period >= 1000, "never below the floor: {s}");
            assert!(on_one_two_five(period), "a round number: {s}");
            let cost = f(&s["refresh_cost_ms"]);
            assert!((cost - f(&s["median_ms"]) - f(&runtime["fixed_ms"])).abs() < 1e-9, "cost is median + fixed: {s}");
            assert!(cost / period as f64 <= share, "{} ms every {period} ms exceeds the share {share}: {s}", cost);
            assert_eq!(s["round_medians_ms"].as_array().map(Vec::len), Some(3), "three rounds: {s}");
        }
        let coalesce = r["recommended_coalesce_ms"].as_u64().expect("coalesce");
        assert!(coalesce >= 20 && on_one_two_five(coalesce), "{r}");
        // The gap was measured with a writer on a scratch copy, and it is the
        // first that fits the budget, or the longest tried.
        let busy = &runtime["busy"];
        assert_eq!(busy["coalesce_ms"], coalesce, "{r}");
        assert!(busy["commits"].as_u64().is_some_and(|c| c > 0), "the writer committed: {r}");
        let busy_total = f(&busy["percent"]) + f(&r["reconcile_percent"]);
        assert!((f(&r["expected_busy_percent"]) - busy_total).abs() < 1e-9, "{r}");
        assert!(busy_total <= budget || coalesce == 1000, "{r}");
        assert!(f(&r["expected_idle_percent"]) <= budget, "{r}");
        let reconcile = r["recommended_reconcile_ms"].as_u64().expect("reconcile");
        assert!(reconcile == 300_000 || (reconcile > 300_000 && on_one_two_five(reconcile)), "{r}");
    }
    // The orchestrator's database was only read.
    assert_eq!(std::fs::read(&db).expect("read"), before, "tune changed the database");
}

/// What tune says to paste into `.env` is what the mirror runs with.
#[test]
fn tune_paste_lines_are_settings_the_mirror_accepts() {
    let (dir, db) = generated(5_000);
    let out = tune(&db, &[]);
    assert!(out.status.success(), "tune: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let block: Vec<(String, String)> = text
        .split("# paste into .env:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("a paste block in:\n{text}"))
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("KEY=VALUE: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let keys: Vec<&str> = block.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ORCH_STAGES_REFRESH_MS",
            "ORCH_QUEUE_REFRESH_MS",
            "ORCH_AGENTS_REFRESH_MS",
            "ORCH_COST_REFRESH_MS",
            "ORCH_RECONCILE_MS",
            "ORCH_COALESCE_MS",
            "ORCH_CPU_BUDGET_PERCENT"
        ]
    );
    // As a dotenv file, the way the report says to use them: the start-up
    // line shows the mirror runs with them.
    let env_file = dir.path().join("tuned.env");
    let lines: String = block.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_file, lines).expect("write the dotenv file");
    let db_s = db.display().to_string();
    let mut child = Binary::command(&[("ORCH_DB_PATH", &db_s), ("ORCH_BIND", "127.0.0.1:0")])
        .arg("--env-file")
        .arg(&env_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn orchmirror");
    let stderr = child.stderr.take().expect("stderr");
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("orchmirror starting"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the start-up line");
    let value = |k: &str| block.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).expect(k);
    let periods = format!(
        "refresh_ms=stages={},queue={},agents={},cost={}",
        value("ORCH_STAGES_REFRESH_MS"),
        value("ORCH_QUEUE_REFRESH_MS"),
        value("ORCH_AGENTS_REFRESH_MS"),
        value("ORCH_COST_REFRESH_MS")
    );
    assert!(line.contains(&periods), "{periods} in {line}");
    assert!(line.contains(&format!("reconcile_ms={}", value("ORCH_RECONCILE_MS"))), "{line}");
    assert!(line.contains(&format!("coalesce_ms={}", value("ORCH_COALESCE_MS"))), "{line}");
    assert!(line.contains(&format!("cpu_budget_percent={}", value("ORCH_CPU_BUDGET_PERCENT"))), "{line}");
}

/// A database that is not there is one clear line, and no file is made.
#[test]
fn tune_on_a_missing_database_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("nothing.sqlite");
    let out = tune(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing.sqlite") && err.contains("no such file"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!db.exists(), "tune created the database");
}

/// A database without a table a section reads: tune names the section and
/// the table in one line, and changes nothing.
#[test]
fn tune_on_a_database_lacking_a_table_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("partial.sqlite");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY, work_item_id TEXT NOT NULL, repo TEXT, stage TEXT NOT NULL,
                             created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));",
    )
    .expect("schema");
    drop(conn);
    let before = std::fs::read(&db).expect("read");
    let out = tune(&db, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tune failed") && err.contains("no such table: jobs"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(std::fs::read(&db).expect("read"), before, "tune changed the database");
}

/// The scratch directories tune leaves in `tmp`.
fn scratch_dirs(tmp: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("orchmirror-tune-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Ctrl-C (SIGINT) ends tune at once and its scratch copy goes with it
/// (issue 33, item 7: it was ignored, and a kill left the copy behind).
#[test]
fn sigint_ends_tune_and_removes_its_scratch_copy() {
    let (_dir, db) = generated(20_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = Binary::command(&[])
        .env("TMPDIR", tmp.path())
        .arg("tune")
        .arg("--db")
        .arg(&db)
        .args(["--samples", "3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tune");
    support::wait_for(std::time::Duration::from_secs(120), "a scratch copy", || {
        (!scratch_dirs(tmp.path()).is_empty()).then_some(())
    });
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(sent.success());
    let status = support::wait_for(std::time::Duration::from_secs(10), "tune to exit", || child.try_wait().ok()?);
    assert_eq!(status.code(), Some(130), "exits as interrupted");
    assert_eq!(scratch_dirs(tmp.path()), Vec::<String>::new(), "the scratch copy is removed");
}

/// No scratch copy can be made (TMPDIR is not a directory): tune says so and
/// advises nothing, rather than printing settings under "paste into .env"
/// that a failed measurement could not support.
#[test]
fn without_a_scratch_copy_tune_fails_and_advises_nothing() {
    let (dir, db) = generated(1_000);
    let not_a_dir = dir.path().join("a-file");
    std::fs::write(&not_a_dir, "x").expect("write");
    let out = Binary::command(&[])
        .env("TMPDIR", &not_a_dir)
        .arg("tune")
        .arg("--db")
        .arg(&db)
        .args(["--samples", "3"])
        .output()
        .expect("tune");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{stdout}");
    assert!(!stdout.contains("paste into .env"), "{stdout}");
    assert!(stderr.contains("scratch copy") && stderr.contains("TMPDIR"), "{stderr}");
}

/// A writer that holds the database exclusively when tune starts (rollback
/// mode, `BEGIN EXCLUSIVE` for 2 s): tune waits for it instead of failing at once.
#[test]
fn tune_waits_for_a_database_held_by_its_writer() {
    let (_dir, db) = generated(1_000);
    let writer = rusqlite::Connection::open(&db).expect("open");
    writer.pragma_update(None, "journal_mode", "DELETE").expect("rollback mode");
    writer.execute_batch("BEGIN EXCLUSIVE; INSERT INTO jobs (agent, status) VALUES ('dev', 'queued');").expect("lock");
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        writer.execute_batch("COMMIT;").expect("commit");
    });
    let out = tune(&db, &["--json"]);
    release.join().expect("writer");
    assert!(out.status.success(), "tune waited for the writer: {}", String::from_utf8_lossy(&out.stderr));
}
