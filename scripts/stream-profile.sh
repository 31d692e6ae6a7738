#!/usr/bin/env bash
# Where the CPU of a stream event goes. Runs examples/stream_load (STREAMS
# streams, CHANGES_PER_S changes a second) and records the mirror with perf
# during its busy phase, then splits the mirror's CPU per event per stream:
#   loopback_rx: the kernel delivering the event into the reader's socket
#     (net_rx_action: the reader's TCP receive path and its wake-up). On
#     loopback it runs in the sender's context, so it is counted as the
#     mirror's CPU; across a network it runs on the reader's host.
#   own: the rest: the mirror's code, its send(2) down to the device, epoll.
# Usage: scripts/stream-profile.sh [STREAMS] [SECONDS] [CHANGES_PER_S]
#   (needs perf: apt-get install linux-perf; STREAMS + 4000 open files)
set -euo pipefail
cd "$(dirname "$0")/.."
streams=${1:-10000}
secs=${2:-15}
rate=${3:-10}
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 2; }
cargo build --release --quiet --bin orchmirror --example stream_load
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
ORCH_MAX_STREAMS=$((streams + 4000)) target/release/examples/stream_load "$streams" "$secs" "$rate" \
  >"$work/report.json" 2>"$work/log" &
load=$!
pid=
while [ -z "$pid" ]; do
  kill -0 "$load" 2>/dev/null || { cat "$work/log" >&2; echo "stream_load ended before its busy phase" >&2; exit 1; }
  sleep 0.2
  pid=$(sed -n 's/^phase C: pid \([0-9]*\).*/\1/p' "$work/log")
done
# The busy phase lasts SECONDS; record all but its last second.
perf record -F 499 -g -p "$pid" -o "$work/perf.data" -- sleep $((secs > 2 ? secs - 1 : 1)) >/dev/null 2>&1
wait "$load"
perf report -i "$work/perf.data" --children --sort sym --stdio -g none 2>/dev/null >"$work/children.txt"
perf report -i "$work/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null >"$work/dso.txt"
python3 - "$work" <<'PY'
import json, re, sys
work = sys.argv[1]
report = json.load(open(f"{work}/report.json"))
def share(path, name):
    for line in open(path):
        f = line.split()
        if len(f) >= 2 and f[-1] == name and f[0].endswith("%"):
            return float(f[0].rstrip("%"))
    return 0.0
rx = share(f"{work}/children.txt", "net_rx_action")
kernel = share(f"{work}/dso.txt", "[kernel.kallsyms]")
per_event = report["us_per_event_per_stream"]
cpu_s = report["cpu_percent_with_streams"] / 100 * report["seconds"]
events = report["events_delivered"]
rx_us = rx / 100 * cpu_s / events * 1e6 if events else None
report.update({
    "profile_kernel_percent": kernel,
    "profile_loopback_rx_percent": rx,
    "us_per_event_per_stream_loopback_rx": round(rx_us, 2) if rx_us is not None else None,
    "us_per_event_per_stream_own": round(per_event - rx_us, 2) if rx_us is not None and per_event else None,
})
print(json.dumps(report))
PY
