#!/usr/bin/env python3
"""What /metrics/stream costs the mirror (issue 11's measurement).

    cargo build --release && scripts/stream-cost.py [STREAMS] [SECONDS] [CHANGES_PER_S]

Runs target/release/orchmirror on a generated database (1,000 jobs, 10
running) with ORCH_REFRESH_MS=100 while a writer inserts a queued job
CHANGES_PER_S times a second (each change is one `queue` event, plus the
`agents` events the running agents' CPU ticks cause). Three phases:

  A. the writer, no stream: the mirror's CPU (baseline);
  B. STREAMS streams opened and idle (writer paused): resident memory per stream;
  C. the writer again, every stream read: CPU per event per stream =
     (CPU in C - CPU in A) / events delivered over all streams.

Defaults: 1000 streams, 20 s per phase, 10 changes/s. Prints one JSON line.
"""

import json
import os
import resource
import selectors
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

STREAMS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
RATE = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
BIN = os.environ.get("ORCHMIRROR_BIN", "target/release/orchmirror")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Writer(threading.Thread):
    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.on, self.stop = path, threading.Event(), False

    def run(self):
        db = sqlite3.connect(self.path, timeout=5)
        while not self.stop:
            if self.on.is_set():
                db.execute("INSERT INTO jobs (agent, status, created_at) VALUES ('bench', 'queued', datetime('now'))")
                db.commit()
            time.sleep(1.0 / RATE)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="stream-cost-")
    db = os.path.join(tmp, "orch.sqlite")
    subprocess.run([BIN, "generate", db, "--jobs", "1000", "--running", "10"], check=True,
                   stderr=subprocess.DEVNULL)
    sqlite3.connect(db).execute("PRAGMA journal_mode=WAL").fetchall()
    port = free_port()
    env = dict(os.environ, ORCH_DB_PATH=db, ORCH_BIND=f"127.0.0.1:{port}", ORCH_REFRESH_MS="100",
               ORCH_MAX_STREAMS=str(STREAMS + 10), RUST_LOG="warn")
    mirror = subprocess.Popen([BIN], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        writer = Writer(db)
        writer.start()
        time.sleep(2)

        # A: the writer, no stream.
        writer.on.set()
        c0 = cpu_seconds(mirror.pid)
        time.sleep(SECONDS)
        cpu_a = cpu_seconds(mirror.pid) - c0
        writer.on.clear()
        time.sleep(1)

        # B: STREAMS idle streams.
        rss_before = rss_bytes(mirror.pid)
        sel = selectors.DefaultSelector()
        for _ in range(STREAMS):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /metrics/stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, [0])
        events = 0

        def drain(until):
            nonlocal events
            while time.time() < until:
                for key, _ in sel.select(timeout=0.05):
                    try:
                        data = key.fileobj.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    n = data.count(b"\nevent: ") + data.startswith(b"event: ")
                    key.data[0] += n
                    events += n

        drain(time.time() + 3)
        rss_idle = rss_bytes(mirror.pid)
        opened = sum(1 for k in sel.get_map().values() if k.data[0] > 0)

        # C: the writer again, every stream read.
        events = 0
        writer.on.set()
        c0 = cpu_seconds(mirror.pid)
        drain(time.time() + SECONDS)
        cpu_c = cpu_seconds(mirror.pid) - c0
        rss_busy = rss_bytes(mirror.pid)
        writer.on.clear()
        writer.stop = True
        per_event_us = (cpu_c - cpu_a) / events * 1e6 if events else None
        print(json.dumps({
            "streams": STREAMS, "streams_with_envelope": opened, "seconds": SECONDS, "changes_per_s": RATE,
            "cpu_percent_without_streams": round(100 * cpu_a / SECONDS, 2),
            "cpu_percent_with_streams": round(100 * cpu_c / SECONDS, 2),
            "events_delivered": events,
            "events_per_stream_per_s": round(events / STREAMS / SECONDS, 2) if STREAMS else 0,
            "us_per_event_per_stream": round(per_event_us, 2) if per_event_us is not None else None,
            "rss_mb_before": round(rss_before / 2**20, 1),
            "rss_mb_idle_streams": round(rss_idle / 2**20, 1),
            "kib_per_idle_stream": round((rss_idle - rss_before) / 1024 / STREAMS, 1) if STREAMS else 0,
            "rss_mb_busy": round(rss_busy / 2**20, 1),
        }))
    finally:
        mirror.terminate()
        mirror.wait(10)


if __name__ == "__main__":
    main()
