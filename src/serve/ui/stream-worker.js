// One stream for every tab of the live page in this browser (a SharedWorker).
// A browser keeps at most six HTTP/1.1 connections to one host; a stream per
// tab left the seventh tab waiting. The worker holds the one stream, keeps
// the state it describes, gives a joining tab that state at once and every
// tab each event after it. When the last tab closes, the browser ends it.
"use strict";
const ports = new Set();
let source = null;
let env = null;            // the envelope with every section event applied
const got = {};            // per section: when its data arrived (ms since the epoch)
const fresh = {};          // per section: when its age was last reset
let mode = "connecting";

function post(msg) {
  for (const port of ports) port.postMessage(msg);
}

function open() {
  let opened = false;
  // refreshed=1: the stream also says when sections refreshed without a change.
  source = new EventSource("metrics/stream?refreshed=1");
  source.addEventListener("envelope", (e) => {
    opened = true;
    mode = "live";
    const at = Date.now();
    env = JSON.parse(e.data);
    if (env.sections) for (const name of Object.keys(env.sections)) { got[name] = at; fresh[name] = at; }
    post({kind: "envelope", data: env, at});
  });
  source.addEventListener("section", (e) => {
    mode = "live";
    const at = Date.now();
    const m = JSON.parse(e.data);
    if (env && env.sections) {
      env[m.section] = m.data;
      env.sections[m.section] = {status: m.status, refreshed_at: m.refreshed_at, age_ms: m.age_ms, error: m.error};
      got[m.section] = at;
      fresh[m.section] = at;
    }
    post({kind: "section", data: m, at});
  });
  source.addEventListener("refreshed", (e) => {
    const at = Date.now();
    const r = JSON.parse(e.data);
    if (env && env.sections) {
      for (const [name, s] of Object.entries(r)) {
        if (!env.sections[name]) continue;
        env.sections[name].refreshed_at = s.refreshed_at;
        env.sections[name].age_ms = s.age_ms;
        fresh[name] = at;
      }
    }
    post({kind: "refreshed", data: r, at});
  });
  source.addEventListener("resync", () => { mode = "resync"; post({kind: "resync"}); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED || !opened) {
      // Refused (too many streams, a proxy without streaming) or never opened:
      // every tab polls instead, and the next tab to join tries again.
      source.close();
      source = null;
      env = null;
      mode = "connecting";
      post({kind: "failed"});
    } else {
      mode = "reconnecting";
      post({kind: "reconnecting"});
    }
  };
}

onconnect = (e) => {
  const port = e.ports[0];
  ports.add(port);
  port.onmessage = (m) => { if (m.data === "close") ports.delete(port); };
  port.start();
  if (env) port.postMessage({kind: "state", data: env, got, fresh, mode});
  if (!source) open();
};
