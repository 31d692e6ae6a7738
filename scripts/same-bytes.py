#!/usr/bin/env python3
"""Whether two builds serve the same bytes for one database: `/metrics`, the
exposition and the stream's first events, with what must differ masked
(times and ages, the stream's random instance, the build, the mirror's own
timings and counters). A refactoring that claims "the wire is unchanged"
is checked with it (issue 32).

Usage: scripts/same-bytes.py OLD_BIN NEW_BIN [JOBS]
  Generates a database of JOBS jobs (default 20000) with NEW_BIN's
  `generate`, serves it with each build in turn (nothing writes to it) and
  prints the first difference, or "same bytes". Exit status 1 on a difference.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def stream_head(url, seconds=2.5):
    """The stream's bytes for a few seconds (its first events)."""
    out = b""
    try:
        with urllib.request.urlopen(url, timeout=seconds) as r:
            end = time.time() + seconds
            while time.time() < end:
                chunk = r.read1(65536)
                if not chunk:
                    break
                out += chunk
    except Exception:
        pass
    return out.decode(errors="replace")


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
AGES = re.compile(r'"(age_ms|age_s|age_in_stage_s|runtime_s|oldest_queued_age_s|[a-z_]*age[a-z_]*)":-?[\d.e+]+')


def mask_json(text):
    text = ISO.sub("T", text)
    return AGES.sub(lambda m: f'"{m.group(1)}":N', text)


def mask_exposition(text):
    lines = []
    for line in text.splitlines():
        # The mirror's own telemetry (timings, counts, the build, the process) differs by nature.
        name = line.split(" ")[2] if line.startswith("# ") and len(line.split(" ")) > 2 else line.split("{")[0].split(" ")[0]
        if name.startswith(("orchmirror_", "process_")):
            continue
        if "age" in name or "seconds" in name and "cpu" not in name:
            line = re.sub(r" [-\d.e+]+$", " N", line)
        lines.append(line)
    return "\n".join(lines)


def mask_stream(text):
    text = re.sub(r"^id: [0-9a-f]{16}\.", "id: I.", text, flags=re.M)
    text = re.sub(r"^: .*$", ":", text, flags=re.M)  # heartbeats and comments
    return mask_json(text)


def serve(binary, db):
    port = free_port()
    env = dict(os.environ, ORCH_DB_PATH=db, ORCH_BIND=f"127.0.0.1:{port}", RUST_LOG="warn", ORCH_REFRESH_MS="3600000")
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if '"status":"ok"' in get(base + "/health").replace(" ", "") and '"pending"' not in get(base + "/metrics"):
                    break
            except Exception:
                pass
            time.sleep(0.1)
        return {
            "/metrics": mask_json(get(base + "/metrics")),
            "/metrics/prometheus": mask_exposition(get(base + "/metrics/prometheus")),
            "/metrics/stream": "\n".join(mask_stream(stream_head(base + "/metrics/stream")).split("\n")[:40]),
        }
    finally:
        proc.terminate()
        proc.wait()


def main():
    old, new = sys.argv[1], sys.argv[2]
    jobs = sys.argv[3] if len(sys.argv) > 3 else "20000"
    work = tempfile.mkdtemp(prefix="same-bytes-")
    try:
        db = os.path.join(work, "orch.sqlite")
        subprocess.run([new, "generate", "--jobs", jobs, db], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        a, b = serve(old, db), serve(new, db)
        same = True
        for route in a:
            if a[route] != b[route]:
                same = False
                la, lb = a[route].splitlines(), b[route].splitlines()
                for i, (x, y) in enumerate(zip(la, lb)):
                    if x != y:
                        print(f"{route}: line {i + 1} differs\n  old: {x[:300]}\n  new: {y[:300]}")
                        break
                else:
                    print(f"{route}: {len(la)} lines against {len(lb)}")
            else:
                print(f"{route}: same bytes ({len(a[route])} characters after masking)")
        sys.exit(0 if same else 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
