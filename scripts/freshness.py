#!/usr/bin/env python3
"""Commit to visible: how long a commit takes to reach /metrics/stream.

Generates (or reuses) a database of JOBS jobs, copies it, puts the copy in the
journal mode asked, starts the mirror on it at its defaults (plus any ORCH_*
variables in the environment), opens one stream, then commits one queued job
at random moments (COMMITS of them, 0.1 to 0.6 s apart) and times each commit,
from the moment COMMIT returned, to the `queue` event whose depth shows it.
Then, with no client and no writer, measures the mirror's idle CPU over
IDLE_S seconds (utime + stime from /proc, as a share of one core).

Then, with SUSTAIN_HZ set, a writer commits one job SUSTAIN_HZ times a second
for SUSTAIN_S seconds (default 20) with one stream open: the mirror's CPU and
the queue events the stream got per second (at most 1000 / ORCH_COALESCE_MS).

Usage: scripts/freshness.py [JOBS] [wal|rollback] [COMMITS] [IDLE_S] [DB_DIR]
  ORCHMIRROR_BIN=path measures another build (for a before/after on one machine).
Prints one JSON line with the percentiles (ms), the idle CPU (%) and, with
SUSTAIN_HZ, the sustained CPU (%) and queue events per second.
"""

import http.client
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs)) - 1))]


def main():
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    mode = sys.argv[2] if len(sys.argv) > 2 else "wal"
    commits = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    idle_s = float(sys.argv[4]) if len(sys.argv) > 4 else 30
    keep = sys.argv[5] if len(sys.argv) > 5 else None
    assert mode in ("wal", "rollback"), "mode: wal or rollback"
    binary = os.environ.get("ORCHMIRROR_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "orchmirror"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target/release/orchmirror")
    work = tempfile.mkdtemp()
    src = os.path.join(keep or work, f"jobs-{jobs}.sqlite")
    if keep:
        os.makedirs(keep, exist_ok=True)
    if not os.path.exists(src):
        subprocess.run([binary, "generate", src, "--jobs", str(jobs)], check=True, capture_output=True)
    db = os.path.join(work, "db.sqlite")
    subprocess.run(["cp", src, db], check=True)
    w = sqlite3.connect(db, isolation_level=None)
    w.execute("PRAGMA journal_mode=" + ("WAL" if mode == "wal" else "DELETE"))
    w.execute("PRAGMA busy_timeout=5000")

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.startswith("ORCH_") or k == "PATH"}
    env.update({"ORCH_DB_PATH": db, "ORCH_BIND": f"127.0.0.1:{port}", "RUST_LOG": "warn"})
    mirror = subprocess.Popen([binary], env=env)
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the mirror did not become ready")

        depths = []  # (monotonic time, depth) per queue event
        cond = threading.Condition()

        stream = socket.create_connection(("127.0.0.1", port))
        stream.sendall(b"GET /metrics/stream HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")

        def read_stream():
            r = stream.makefile("rb")
            while r.readline() not in (b"\r\n", b""):
                pass  # the head; HTTP/1.0: the body is not chunked
            event, data = None, None
            while True:
                try:
                    line = r.readline()
                except (OSError, ValueError):
                    return
                if not line:
                    return
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and event:
                    now = time.monotonic()
                    body = json.loads(data)
                    depth = None
                    if event == "envelope":
                        depth = body["queue"]["depth"]
                    elif event == "section" and body["section"] == "queue" and body["data"]:
                        depth = body["data"]["depth"]
                    if depth is not None:
                        with cond:
                            depths.append((now, depth))
                            cond.notify_all()
                    event, data = None, None

        threading.Thread(target=read_stream, daemon=True).start()
        with cond:
            cond.wait_for(lambda: depths, timeout=10)
        rng = random.Random(20)
        latencies = []
        for _ in range(commits):
            time.sleep(rng.uniform(0.1, 0.6))
            w.execute("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued')")
            committed = time.monotonic()
            want = w.execute("SELECT count(*) FROM jobs WHERE status='queued'").fetchone()[0]
            with cond:
                ok = cond.wait_for(lambda: any(d == want and t >= committed for t, d in depths), timeout=5)
                seen = [t for t, d in depths if d == want and t >= committed]
            if not ok:
                raise SystemExit(f"no queue event with depth {want} within 5 s")
            latencies.append((seen[0] - committed) * 1000)

        result = {
            "jobs": jobs, "mode": mode, "commits": commits,
            "p50_ms": round(percentile(latencies, 50), 2),
            "p90_ms": round(percentile(latencies, 90), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(max(latencies), 2),
        }
        hz = float(os.environ.get("SUSTAIN_HZ", "0"))
        if hz > 0:
            sustain_s = float(os.environ.get("SUSTAIN_S", "20"))
            with cond:
                before = len(depths)
            t0, c0 = time.monotonic(), cpu_seconds(mirror.pid)
            n = 0
            while time.monotonic() - t0 < sustain_s:
                w.execute("INSERT INTO jobs (agent, status) VALUES ('dev', 'queued')")
                n += 1
                time.sleep(max(0.0, t0 + n / hz - time.monotonic()))
            elapsed = time.monotonic() - t0
            result.update({
                "sustain_hz": round(n / elapsed, 1),
                "sustain_cpu_pct": round((cpu_seconds(mirror.pid) - c0) / elapsed * 100, 2),
            })
            time.sleep(1)
            with cond:
                result["sustain_queue_events_per_s"] = round((len(depths) - before) / elapsed, 1)

        # Idle: no client, no writer.
        stream.shutdown(socket.SHUT_RDWR)
        w.close()
        time.sleep(2)
        t0, c0 = time.monotonic(), cpu_seconds(mirror.pid)
        time.sleep(idle_s)
        result["idle_cpu_pct"] = round((cpu_seconds(mirror.pid) - c0) / (time.monotonic() - t0) * 100, 3)
        result["idle_s"] = idle_s
        print(json.dumps(result))
    finally:
        mirror.terminate()
        mirror.wait(timeout=10)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
