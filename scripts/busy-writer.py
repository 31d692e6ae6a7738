#!/usr/bin/env python3
"""What a reader costs a writer without enough busy timeout (README,
"Running beside the orchestrator"): a writer commits about 300 times a
second for DURATION seconds, each commit one job queued and another started,
with the given busy timeout, and reports how many commits failed with
SQLITE_BUSY ("database is locked").

    scripts/busy-writer.py DB BUSY_MS [DURATION]

Run it with and without a mirror on DB (target/release/orchmirror with
ORCH_DB_PATH=DB and, to make reads frequent, ORCH_REFRESH_MS=20). In
rollback-journal mode (a DB whose journal_mode is not WAL) each refresh holds
a shared lock for its read, so at BUSY_MS=0 some commits fail; with a busy
timeout longer than the mirror's longest refresh none do. In WAL mode none
fail at any timeout: tests/integration/writer_cost.rs checks those two.
"""
import sqlite3
import sys
import time

db, busy_ms = sys.argv[1], int(sys.argv[2])
duration = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
c = sqlite3.connect(db, timeout=busy_ms / 1000.0, isolation_level=None)
mode = c.execute("PRAGMA journal_mode").fetchone()[0]
commits = failed = 0
first = None
start = time.time()
while time.time() - start < duration:
    try:
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO jobs (repo, agent, status, attempts) VALUES ('repo-1', 'dev', 'queued', 0)")
        c.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = datetime('now') "
                  "WHERE id = (SELECT MIN(id) FROM jobs WHERE status = 'queued')")
        c.execute("COMMIT")
        commits += 1
    except sqlite3.OperationalError as e:
        failed += 1
        first = first or str(e)
        if c.in_transaction:
            c.execute("ROLLBACK")
    time.sleep(0.002)
c.close()
print(f"journal_mode={mode} busy_timeout={busy_ms}ms: {commits} committed, {failed} failed"
      + (f" (first: {first})" if first else ""))
