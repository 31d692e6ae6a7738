#!/usr/bin/env python3
"""Peak memory of concurrent compressed /metrics requests (issue 24, item 3).

Usage: scripts/compression-memory.py BINARY DB CLIENTS
  DB: e.g. `orchmirror generate db.sqlite --jobs 100000 --running 10000` (a ~3 MB envelope).
Starts BINARY on DB, sends CLIENTS concurrent `GET /metrics` with `Accept-Encoding: br`,
and prints the process RSS before, its peak (VmHWM) and after."""
binary, db, clients = sys.argv[1], sys.argv[2], int(sys.argv[3])
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
port = free_port()
env = {"ORCH_DB_PATH": db, "ORCH_BIND": f"127.0.0.1:{port}", "RUST_LOG": "warn", "PATH": os.environ["PATH"], "ORCH_REFRESH_MS": "60000"}
p = subprocess.Popen([binary], env=env)
for _ in range(300):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5); c.request("GET", "/readyz")
        if c.getresponse().status == 200: break
    except OSError: pass
    time.sleep(0.2)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmHWM") or l.startswith("VmRSS"): yield l.split()[0], int(l.split()[1]) // 1024
base = dict(rss())
sizes = []
def one():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("GET", "/metrics", headers={"Accept-Encoding": "br"})
    r = c.getresponse(); sizes.append(len(r.read()))
ts = [threading.Thread(target=one) for _ in range(clients)]
t0 = time.time()
[t.start() for t in ts]; [t.join() for t in ts]
took = time.time() - t0
after = dict(rss())
print(f"clients={clients} body_br_bytes={sizes[0] if sizes else None} rss_before={base['VmRSS:']}MB peak(VmHWM)={after['VmHWM:']}MB rss_after={after['VmRSS:']}MB took={took:.1f}s")
p.terminate(); p.wait()
