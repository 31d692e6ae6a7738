#!/usr/bin/env bash
# The mirror's background cost: a database of JOBS jobs, a writer committing in
# the orchestrator's pattern RATE times a second (default 10; 0: no writer),
# nobody reading /metrics. ORCH_* variables in the environment reach the mirror. Reports
# the mirror's CPU (utime + stime from /proc) over WINDOW seconds as a share of
# one core, and its RSS. Needs python3 (the writer).
# Usage: scripts/background-cpu.sh [JOBS] [WINDOW_SECONDS] [DB_DIR]
#   DB_DIR keeps generated databases between runs (default: a temporary directory).
#   ORCHMIRROR_BIN=path measures another build (for a before/after on one machine).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-1000000}
window=${2:-30}
dir=${3:-}
rate=${RATE:-10}
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 2; }
bin=${ORCHMIRROR_BIN:-target/release/orchmirror}
[ -n "${ORCHMIRROR_BIN:-}" ] || cargo build --release --quiet --bin orchmirror
work=$(mktemp -d)
# The writer names its own pid (python3 may be a wrapper that forks it).
trap 'kill $(jobs -p) $(cat "$work/writer.pid" 2>/dev/null) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
if [ -n "$dir" ]; then
  mkdir -p "$dir"
  src="$dir/jobs-$jobs.sqlite"
  [ -f "$src" ] || target/release/orchmirror generate "$src" --jobs "$jobs" >/dev/null 2>&1
else
  src="$work/gen.sqlite"
  target/release/orchmirror generate "$src" --jobs "$jobs" >/dev/null 2>&1
fi
# The writer changes the database: work on a copy so a kept one stays as generated.
db="$work/db.sqlite"
cp "$src" "$db"
writer() {
python3 - "$db" "$rate" "$work/writer.pid" <<'PY'
import os, random, sqlite3, sys, time
open(sys.argv[3], "w").write(str(os.getpid()))
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
rng = random.Random(7)
def pick(sql):
    row = db.execute(sql + " ORDER BY random() LIMIT 1").fetchone()
    return row and row[0]
while True:
    t = time.monotonic()
    db.execute("BEGIN")
    for _ in range(3):
        k = rng.randrange(6)
        if k == 0:
            db.execute("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued')")
        elif k == 1 and (j := pick("SELECT id FROM jobs WHERE status = 'queued'")):
            db.execute("UPDATE jobs SET status='running', attempts=attempts+1, started_at=datetime('now') WHERE id=?", (j,))
            db.execute("INSERT INTO agent_runs (job_id, agent) VALUES (?, 'dev')", (j,))
        elif k == 2 and (r := pick("SELECT id FROM agent_runs WHERE finished_at IS NULL AND id > (SELECT MAX(id) - 1000 FROM agent_runs)")):
            db.execute("UPDATE agent_runs SET finished_at=datetime('now'), cost_usd=?, input_tokens=?, output_tokens=? WHERE id=?",
                       (rng.random(), rng.randrange(10**5), rng.randrange(10**4), r))
            db.execute("UPDATE jobs SET status=? WHERE id=(SELECT job_id FROM agent_runs WHERE id=?) AND status='running'",
                       (rng.choice(["done", "failed"]), r))
        elif k == 3 and (j := pick("SELECT id FROM jobs WHERE status = 'failed' AND id > (SELECT MAX(id) - 1000 FROM jobs)")):
            db.execute("UPDATE jobs SET status='queued' WHERE id=?", (j,))
        elif k == 4:
            db.execute("UPDATE tasks SET stage=stage, updated_at=datetime('now') WHERE id=(SELECT MAX(id) FROM tasks)")
    db.execute("COMMIT")
    time.sleep(max(0.0, 1.0 / float(sys.argv[2]) - (time.monotonic() - t)))
PY
}
if [ "$rate" != 0 ]; then writer & fi
ORCH_DB_PATH="$db" ORCH_BIND=127.0.0.1:18811 RUST_LOG=warn "$bin" &
pid=$!
for _ in $(seq 300); do
  curl -sf http://127.0.0.1:18811/health 2>/dev/null | grep -q '^{"status":"ok"' && break
  sleep 0.2
done
sleep 5 # past the first full loads
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); s0=$(date +%s.%N)
sleep "$window"
t1=$(ticks); s1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
cpu=$(echo "scale=2; 100 * ($t1 - $t0) / $hz / ($s1 - $s0)" | bc)
echo "jobs=$jobs commits_per_s=$rate window_s=$window cpu_percent_of_one_core=$cpu rss_mb=$((rss / 1024))"
if [ -n "${SHOW_SECTIONS:-}" ]; then
  # Mean refresh time per section since start (all refreshes: unchanged ones included).
  curl -sf http://127.0.0.1:18811/metrics/prometheus | awk -F'[{}" ]' '
    /^orchmirror_refresh_duration_seconds_sum/ {sum[$3]=$NF}
    /^orchmirror_refresh_duration_seconds_count/ {n[$3]=$NF}
    END {for (s in sum) printf "  %-7s refreshes=%d mean_ms=%.2f\n", s, n[s], 1000*sum[s]/n[s]}'
fi
