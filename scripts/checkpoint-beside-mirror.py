#!/usr/bin/env python3
"""How the mirror's reads change a writer's checkpoints (README, "Running
beside the orchestrator"). A writer commits about 100 times a second for
DURATION seconds, one small job per commit, and every 200 commits runs
PRAGMA wal_checkpoint(MODE) with the given busy timeout; it reports how many
checkpoints were busy (could not finish) and the largest -wal it saw.

    scripts/checkpoint-beside-mirror.py DB MODE BUSY_MS [DURATION]

Run it with and without a mirror on DB (target/release/orchmirror with
ORCH_DB_PATH=DB) to compare. MODE: PASSIVE, FULL, RESTART or TRUNCATE.
"""
import os
import sqlite3
import sys
import time

db, mode, busy_ms = sys.argv[1], sys.argv[2].upper(), int(sys.argv[3])
duration = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
c = sqlite3.connect(db, timeout=busy_ms / 1000.0, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA wal_autocheckpoint=0")  # only the writer's own checkpoints
commits = attempts = busy = 0
peak = 0
start = time.time()
while time.time() - start < duration:
    c.execute("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued')")
    commits += 1
    if commits % 200 == 0:
        attempts += 1
        try:
            b, log, done = c.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            # busy=1: a RESTART/TRUNCATE could not finish; PASSIVE: frames left over.
            if b == 1 or (mode == "PASSIVE" and log != done):
                busy += 1
        except sqlite3.OperationalError:
            busy += 1
    try:
        peak = max(peak, os.path.getsize(db + "-wal"))
    except OSError:
        pass
    time.sleep(0.01)
c.close()
print(f"{mode} busy_timeout={busy_ms}ms: {commits} commits, {busy} of {attempts} checkpoints busy, "
      f"largest -wal {peak / 1e6:.2f} MB")
