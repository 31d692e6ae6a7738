#!/usr/bin/env python3
"""What a stream reader receives, and what it costs the mirror, on the plain
stream and on the changes-only form (issue 35; BENCHMARKS.md, "Changes, not
copies").

    scripts/stream-bytes.py [AGENTS] [MOVING] [SECONDS] [READERS]

Defaults: 2020 agents, 20 moving, 10 s per phase, 5 readers. Builds a
database with AGENTS running jobs whose runs point at live processes (one
sleeping process behind the still agents, two that use a little CPU behind
the MOVING ones, so their tick counts move about once a second), nothing
written to it, and serves it with target/release/orchmirror (or
ORCHMIRROR_BIN) at the default 1 s refresh period. Three phases of SECONDS:

  A: no reader (the mirror's own cost);
  B: READERS plain readers (/metrics/stream);
  C: READERS changes-only readers (/metrics/stream?changes=1).

For B and C it prints the bytes per second each reader received (after its
first event, the envelope), the events per second, and the mirror's CPU per
reader-second beyond phase A. One JSON object per phase.
"""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

AGENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 2020
MOVING = int(sys.argv[2]) if len(sys.argv) > 2 else 20
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
READERS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("ORCHMIRROR_BIN", os.path.join(ROOT, "target/release/orchmirror"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reader(threading.Thread):
    """Reads one stream, counting bytes and events after the first event."""

    def __init__(self, port, target):
        super().__init__(daemon=True)
        self.port, self.target = port, target
        self.bytes = self.events = 0
        self.counting = False
        self.stop = False

    def run(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(f"GET {self.target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        buf = b""
        while not self.stop:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            if not self.counting:
                buf += chunk
                # The envelope event ends with a blank line; count from what follows it.
                head = buf.find(b"\r\n\r\n")
                end = buf.find(b"\n\n", buf.find(b"event: envelope"))
                if head >= 0 and end >= 0:
                    self.counting = True
                    rest = buf[end + 2:]
                    self.bytes += len(rest)
                    self.events += rest.count(b"\nevent: ") + rest.startswith(b"event: ")
                continue
            self.bytes += len(chunk)
            self.events += chunk.count(b"event: ")
        s.close()


def phase(pid, port, target, n):
    readers = [Reader(port, target) for _ in range(n)]
    for r in readers:
        r.start()
    time.sleep(2)  # the envelopes arrive; counting starts after them
    for r in readers:
        r.bytes = r.events = 0
    c0, t0 = cpu(pid), time.time()
    time.sleep(SECONDS)
    c1, t1 = cpu(pid), time.time()
    got = [(r.bytes, r.events) for r in readers]
    for r in readers:
        r.stop = True
    secs = t1 - t0
    return secs, (c1 - c0) / secs, got


def main():
    d = tempfile.mkdtemp(prefix="orchmirror-stream-bytes-")
    db = os.path.join(d, "db.sqlite")
    c = sqlite3.connect(db)
    with open(os.path.join(ROOT, "src/schema.sql")) as f:
        c.executescript(f.read())
    c.execute("PRAGMA journal_mode=WAL")
    still = subprocess.Popen(["sleep", "3600"])
    burn = "while :; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.3; done"
    movers = [subprocess.Popen(["sh", "-c", burn]) for _ in range(2 if MOVING else 0)]
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    for i in range(AGENTS):
        pid = movers[i % len(movers)].pid if i < MOVING else still.pid
        job = c.execute("INSERT INTO jobs (agent, repo, status, attempts, started_at) "
                        "VALUES ('developer', 'core', 'running', 1, ?)", (now,)).lastrowid
        c.execute("INSERT INTO agent_runs (job_id, agent, pid, model, effort, started_at) "
                  "VALUES (?, 'developer', ?, 'model-1', 'medium', ?)", (job, pid, now))
    c.commit()
    c.close()
    port = free_port()
    env = dict(os.environ, ORCH_DB_PATH=db, ORCH_BIND=f"127.0.0.1:{port}", RUST_LOG="warn")
    mirror = subprocess.Popen([BIN], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        secs, idle, _ = phase(mirror.pid, port, "/metrics/stream", 0)
        print(json.dumps({"agents": AGENTS, "moving": MOVING, "phase": "A: no reader",
                          "mirror_cpu_percent": round(idle * 100, 2)}))
        for name, target in [("B: plain", "/metrics/stream"), ("C: changes", "/metrics/stream?changes=1")]:
            secs, busy, got = phase(mirror.pid, port, target, READERS)
            per_reader = sorted(b / secs for b, _ in got)
            events = sorted(e / secs for _, e in got)
            print(json.dumps({
                "agents": AGENTS, "moving": MOVING, "phase": name, "readers": READERS,
                "bytes_per_s_per_reader_median": round(per_reader[len(per_reader) // 2]),
                "events_per_s_per_reader_median": round(events[len(events) // 2], 2),
                "mirror_cpu_percent": round(busy * 100, 2),
                "cpu_ms_per_reader_second": round(max(busy - idle, 0) * 1000 / READERS, 3),
            }))
            time.sleep(1)
    finally:
        mirror.terminate()
        mirror.wait()
        for p in [still] + movers:
            p.kill()
            p.wait()
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


main()
