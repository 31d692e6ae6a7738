#!/usr/bin/env bash
# A real Prometheus scrapes orchmirror's demo every second for about 10 s; then
# its HTTP API must hold every orch_*/orchmirror_* family with plausible values,
# and `promtool check metrics` must find no problem in either exposition format.
# Installs Debian's prometheus package when missing. Loopback only; stops
# everything it started. Usage: scripts/prometheus-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "installing Debian's prometheus package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; }
fi
cargo build --release --quiet --bin orchmirror

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mirror=127.0.0.1:18811
prom=127.0.0.1:19090
ORCH_BIND=$mirror RUST_LOG=warn target/release/orchmirror 2>"$work/mirror.log" &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://$mirror/health" | grep -q '^{"status":"ok"' && break
  sleep 0.2
done

cat >"$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: orchmirror
    static_configs:
      - targets: ["$mirror"]
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="$prom" >"$work/prometheus.log" 2>&1 &
pids+=($!)
sleep 11

fail=0
query() { curl -sf --get "http://$prom/api/v1/query" --data-urlencode "query=$1"; }
check() { # name, PromQL, python condition on the result list `r`
  local out; out=$(query "$2") || { echo "FAIL $1: query failed"; fail=1; return; }
  if python3 -c "import json,sys; r=json.loads(sys.argv[1])['data']['result']; sys.exit(0 if ($3) else 1)" "$out"; then
    echo "ok   $1"
  else
    echo "FAIL $1: $out"; fail=1
  fi
}
check "orch_queue_depth present and >= 0" 'orch_queue_depth' 'len(r) == 1 and float(r[0]["value"][1]) >= 0'
check "orchmirror_section_up = 1 for all four sections" 'orchmirror_section_up' 'len(r) == 4 and all(float(x["value"][1]) == 1 for x in r)'
check "several scrapes stored" 'count_over_time(orch_queue_depth[30s])' 'len(r) == 1 and float(r[0]["value"][1]) >= 5'
check "cpu seconds of running agents" 'orch_agent_cpu_seconds_total' 'len(r) >= 1 and all(float(x["value"][1]) >= 0 for x in r)'
for family in orch_tasks_active orch_task_stage_age_seconds_max orch_jobs orch_queue_oldest_age_seconds \
  orch_jobs_retried orch_job_retries orch_job_max_attempts orch_agents_running orch_agent_runtime_seconds \
  orch_agent_runs_total orch_cost_usd_total orch_tokens_total orchmirror_section_age_seconds \
  orchmirror_refresh_duration_seconds_count orchmirror_refresh_errors_total orchmirror_refresh_skipped_total \
  orchmirror_snapshot_timeouts_total orchmirror_actor_restarts_total orchmirror_subscriber_drops_total \
  orchmirror_build_info; do
  check "$family stored" "$family" 'len(r) >= 1'
done

# promtool lints the Prometheus text format (it does not parse OpenMetrics;
# the Prometheus server above scraped the OpenMetrics form).
lint=$(curl -sf -H 'Accept: text/plain;version=0.0.4' "http://$mirror/metrics/prometheus" | promtool check metrics 2>&1) \
  && [ -z "$lint" ] && echo "ok   promtool check metrics: no problem" \
  || { echo "FAIL promtool check metrics: $lint"; fail=1; }
[ "$fail" = 0 ] && echo "prometheus smoke: all checks passed" || { echo "prometheus smoke: FAILED"; tail -5 "$work/prometheus.log"; exit 1; }
