# A sidecar's view of /metrics/stream: keeps the current envelope, resumes with Last-Event-ID.
import json, os, time, urllib.request

URL = os.environ.get("ORCHMIRROR_STREAM_URL", "http://127.0.0.1:8787/metrics/stream")
state, last_id = {}, None
while True:
    try:
        req = urllib.request.Request(URL, headers={"Last-Event-ID": last_id} if last_id else {})
        with urllib.request.urlopen(req, timeout=60) as resp:  # > ORCH_STREAM_HEARTBEAT_MS
            event, data = "message", []
            for line in (raw.decode().rstrip("\r\n") for raw in resp):
                if line == "" and data:  # a blank line ends an event
                    msg = json.loads("\n".join(data))
                    if event == "envelope": state = msg
                    if event == "section":
                        state[msg["section"]] = msg["data"]
                        state["sections"][msg["section"]] = {k: msg[k] for k in ("status", "refreshed_at", "age_ms", "error")}
                    print(event, msg.get("section", ""), {s: v["status"] for s, v in state["sections"].items()}, flush=True)
                if line == "": event, data = "message", []
                field, _, value = line.partition(":")   # ":…" alone is a heartbeat comment
                value = value[1:] if value.startswith(" ") else value
                if field == "event": event = value
                if field == "data": data.append(value)
                if field == "id": last_id = value
    except OSError as e:
        print("stream lost, resuming:", e, flush=True)
    time.sleep(1)
