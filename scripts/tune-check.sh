#!/usr/bin/env bash
# Does following `orchmirror tune` keep the mirror within the budget it states?
# Generates a database of JOBS jobs, runs tune on it, then runs the mirror with
# tune's recommendations (its "paste into .env" lines) for WINDOW seconds with
# the database idle and again with a writer committing RATE times a second
# (scripts/background-cpu.sh), and prints tune's expectation beside each.
# Usage: scripts/tune-check.sh [JOBS] [WINDOW_SECONDS] [RATE] [DB_DIR]
#   RATE (default 20) is also given to tune as --commit-rate.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-200000}
window=${2:-60}
rate=${3:-20}
dir=${4:-$(mktemp -d)}
cargo build --release --quiet --bin orchmirror
mkdir -p "$dir"
db="$dir/jobs-$jobs.sqlite"
[ -f "$db" ] || target/release/orchmirror generate "$db" --jobs "$jobs" >/dev/null 2>&1
report=$(target/release/orchmirror tune --db "$db" --commit-rate "$rate")
echo "$report" | sed -n '/^section/,/^$/p;/^# paste/,/^$/p;/^expected/p'
# Only tune's lines reach the mirror (an .env in this directory would be read too).
vars=$(echo "$report" | sed -n '/^# paste/,/^$/p' | grep '^ORCH_')
for r in 0 "$rate"; do
  env $vars ORCHMIRROR_BIN=target/release/orchmirror RATE=$r scripts/background-cpu.sh "$jobs" "$window" "$dir"
done
