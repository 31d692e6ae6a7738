#!/usr/bin/env bash
# /metrics throughput against its ceiling (a minimal actix-web handler serving
# the same bytes), same machine, same run, wrk on loopback.
# Usage: scripts/throughput.sh [JOBS] [SECONDS]   (needs wrk: apt-get install wrk)
#   RUNNING=N generates N running agents (each with a run) instead of 10,
#   for a large envelope; the report adds wrk's p50/p99 latency and the mirror's RSS.
#   ROUNDS=N (default 1) runs N interleaved rounds (mirror, then fixed body)
#   and ends with the median of the rounds' ratios: the machine is shared and
#   noisy, and one round can be off by 0.1 either way.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-1000000}
secs=${2:-10}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 2; }
cargo build --release --quiet --bin orchmirror --example fixed_body
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
target/release/orchmirror generate "$work/db.sqlite" --jobs "$jobs" ${RUNNING:+--running "$RUNNING"} >/dev/null 2>&1
ORCH_DB_PATH="$work/db.sqlite" ORCH_BIND=127.0.0.1:18801 RUST_LOG=warn target/release/orchmirror &
mirror_pid=$!
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:18801/health 2>/dev/null | grep -q '^{"status":"ok"' && break
  sleep 0.2
done
curl -sf http://127.0.0.1:18801/metrics > "$work/body.json"
target/release/examples/fixed_body "$work/body.json" 127.0.0.1:18802 &
sleep 1
run() { wrk -t2 -c16 -d"${secs}s" --latency "$1"; }
field() { awk -v k="$1" '$1 == k {print $2}'; }
ratios=()
for round in $(seq "${ROUNDS:-1}"); do
  m=$(run http://127.0.0.1:18801/metrics)
  f=$(run http://127.0.0.1:18802/metrics)
  mirror=$(echo "$m" | awk '/Requests\/sec/ {print $2}')
  fixed=$(echo "$f" | awk '/Requests\/sec/ {print $2}')
  rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$mirror_pid/status")
  ratio=$(echo "scale=2; $mirror / $fixed" | bc)
  ratios+=("$ratio")
  echo "jobs=$jobs running=${RUNNING:-10} body_bytes=$(wc -c < "$work/body.json") mirror_rps=$mirror fixed_body_rps=$fixed ratio=$ratio"
  echo "  latency p50/p99: mirror $(echo "$m" | field 50%)/$(echo "$m" | field 99%) fixed $(echo "$f" | field 50%)/$(echo "$f" | field 99%); mirror RSS ${rss} MB"
done
if [ "${#ratios[@]}" -gt 1 ]; then
  echo "median ratio over ${#ratios[@]} rounds: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')"
fi
