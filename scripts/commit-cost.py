#!/usr/bin/env python3
"""What a commit costs the mirror: a curve over history size, journal mode and
commit rate, with commit to visible beside each point.

For each size in JOBS (a production-like history from `orchmirror generate`:
failures and cancellations over the whole history, unfinished runs of ended
jobs), each journal mode in MODES and each rate in RATES (commits a second;
`max`: as many as the writer can make), on a fresh copy of the database:

1. the mirror at its defaults (plus any ORCH_* variables in the environment)
   beside the pattern writer (`examples/pattern_writer.rs`: the orchestrator's
   statement groups, touching rows anywhere in history), nobody reading:
   the mirror's CPU (utime + stime from /proc) over WINDOW seconds, as a share
   of one core, and the commits the writer made;
2. the same with one stream reader: the writer also commits probes (a task
   named PROBE-n, at most 5 a second) and the reader times each from its
   COMMIT to the `stages` event that shows it: p50, p99, max (ms).

Usage: scripts/commit-cost.py [JOBS] [MODES] [RATES] [WINDOW_S] [DB_DIR]
  defaults: 1000,100000,1000000  wal,rollback  1,10,100,max  10  a temporary directory
  ORCHMIRROR_BIN=path measures another build (for a before/after on one machine).
Prints one JSON line per point.
"""

import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = re.compile(rb"PROBE-(\d+)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build():
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "orchmirror", "--example", "pattern_writer"],
        cwd=ROOT,
        check=True,
    )
    mirror = os.environ.get("ORCHMIRROR_BIN") or os.path.join(ROOT, "target/release/orchmirror")
    return mirror, os.path.join(ROOT, "target/release/examples/pattern_writer")


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def start_mirror(mirror, db, port):
    env = dict(os.environ, ORCH_DB_PATH=db, ORCH_BIND=f"127.0.0.1:{port}", RUST_LOG="warn")
    proc = subprocess.Popen([mirror], env=env, stdout=subprocess.DEVNULL)
    until = time.monotonic() + 300
    while time.monotonic() < until:
        try:
            status, body = get(port, "/health")
            health = json.loads(body)
            if status == 200 and all(s.get("status") == "ok" for s in health["sections"].values()):
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    else:
        proc.kill()
        raise SystemExit("the mirror did not become healthy")
    time.sleep(2)  # past the first full loads
    return proc


def reader(port, seen, stop, held):
    """Records when each PROBE-n first appears on the stream. The body is
    read through http.client, which undoes the chunked framing (a chunk
    boundary can fall inside an event's data line, or inside a probe's name).
    No read timeout (a timed-out response cannot be read again): the caller
    shuts the socket down (`held["conn"]`) to end it."""
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", "/metrics/stream", headers={"Accept": "text/event-stream"})
    held["conn"] = c
    r = c.getresponse()
    buf = b""
    while not stop.is_set():
        try:
            chunk = r.read1(1 << 20)
        except (OSError, http.client.HTTPException):
            break
        if not chunk:
            break
        now = time.time_ns()
        buf += chunk
        lines = buf.split(b"\n")
        buf = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                for n in PROBE.findall(line):
                    seen.setdefault(int(n), now)
    c.close()


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def point(mirror, writer, src, mode, rate, window, work):
    db = os.path.join(work, "db.sqlite")
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    shutil.copyfile(src, db)
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=" + ("WAL" if mode == "wal" else "DELETE"))
    c.close()
    port = free_port()
    proc = start_mirror(mirror, db, port)
    hz = os.sysconf("SC_CLK_TCK")
    rate_arg = "0" if rate == "max" else str(rate)
    out = {}
    try:
        # 1. Nobody reading.
        w = subprocess.Popen([writer, db, rate_arg, str(window + 1)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        t0, s0 = ticks(proc.pid), time.monotonic()
        time.sleep(window)
        t1, s1 = ticks(proc.pid), time.monotonic()
        last = w.communicate()[0].split()
        commits = int(last[-3]) / float(last[-1])
        out["cpu_percent"] = round(100 * (t1 - t0) / hz / (s1 - s0), 2)
        out["commits_per_s"] = round(commits, 1)
        # 2. One reader, probes timed.
        seen, stop, held = {}, threading.Event(), {}
        th = threading.Thread(target=reader, args=(port, seen, stop, held), daemon=True)
        th.start()
        time.sleep(0.5)
        probe_hz = 5 if rate == "max" else min(5, float(rate) / 2)
        w = subprocess.Popen(
            [writer, db, rate_arg, str(window), str(probe_hz)], stdout=subprocess.PIPE, text=True
        )
        committed = {}
        for line in w.stdout:
            f = line.split()
            if f and f[0] == "probe":
                committed[int(f[1])] = int(f[2])
        w.wait()
        time.sleep(1.0)
        stop.set()
        if "conn" in held and held["conn"].sock is not None:
            held["conn"].sock.shutdown(socket.SHUT_RDWR)
        th.join()
        lat = [(seen[n] - t) / 1e6 for n, t in committed.items() if n in seen]
        out["probes"] = len(committed)
        out["probes_unseen"] = len(committed) - len(lat)
        out["visible_p50_ms"] = percentile(lat, 50) and round(percentile(lat, 50), 2)
        out["visible_p99_ms"] = percentile(lat, 99) and round(percentile(lat, 99), 2)
        out["visible_max_ms"] = lat and round(max(lat), 2)
        # Mean refresh per section over the whole run.
        status, body = get(port, "/metrics/prometheus")
        sums, counts = {}, {}
        for line in body.decode().splitlines():
            m = re.match(r'orchmirror_refresh_duration_seconds_(sum|count)\{section="(\w+)"\} (\S+)', line)
            if m:
                (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
        out["mean_refresh_ms"] = {s: round(1000 * sums[s] / counts[s], 3) for s in sums if counts.get(s)}
    finally:
        proc.terminate()
        proc.wait()
    return out


def main():
    args = sys.argv[1:]
    sizes = [int(x) for x in (args[0] if len(args) > 0 else "1000,100000,1000000").split(",")]
    modes = (args[1] if len(args) > 1 else "wal,rollback").split(",")
    rates = (args[2] if len(args) > 2 else "1,10,100,max").split(",")
    window = float(args[3]) if len(args) > 3 else 10.0
    keep = args[4] if len(args) > 4 else None
    mirror, writer = build()
    work = tempfile.mkdtemp(prefix="commit-cost-")
    try:
        for jobs in sizes:
            src = os.path.join(keep or work, f"history-{jobs}.sqlite")
            if keep:
                os.makedirs(keep, exist_ok=True)
            if not os.path.exists(src):
                subprocess.run([mirror, "generate", src, "--jobs", str(jobs)], check=True, capture_output=True)
            for mode in modes:
                for rate in rates:
                    r = point(mirror, writer, src, mode, rate, window, work)
                    print(json.dumps({"jobs": jobs, "mode": mode, "rate": rate, **r}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
