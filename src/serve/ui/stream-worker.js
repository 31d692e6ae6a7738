// One stream for every tab of the live page in this browser (a SharedWorker).
// A browser keeps at most six HTTP/1.1 connections to one host; a stream per
// tab left the seventh tab waiting. The worker holds the one stream, keeps
// the state it describes, gives a joining tab that state at once and every
// tab each event after it. When the last tab closes, the browser ends it.
"use strict";
const ports = new Set();
let source = null;
let env = null;            // the envelope with every change applied
const renderedAt = {};     // per section: the generated_at its value was rendered at (ms)
const got = {};            // per section: when its data arrived (ms since the epoch)
const fresh = {};          // per section: when its age was last reset
let mode = "connecting";

function post(msg) {
  for (const port of ports) port.postMessage(msg);
}

function open() {
  let opened = false;
  // refreshed=1: the stream also says when sections refreshed without a change.
  // changes=1: a section's event carries what changed, not the whole section
  // again (README, "The stream"); the worker applies it and gives the tabs
  // the section whole.
  source = new EventSource("metrics/stream?refreshed=1&changes=1");
  source.addEventListener("envelope", (e) => {
    opened = true;
    mode = "live";
    const at = Date.now();
    env = JSON.parse(e.data);
    const rendered = Date.parse(env.generated_at);
    if (env.sections) {
      for (const name of Object.keys(env.sections)) { got[name] = at; fresh[name] = at; renderedAt[name] = rendered; }
    }
    post({kind: "envelope", data: env, at});
  });
  source.addEventListener("change", (e) => {
    mode = "live";
    const at = Date.now();
    const m = JSON.parse(e.data);
    if (!env || !env.sections) return;
    const name = m.section;
    if ("data" in m) {
      env[name] = m.data;
    } else {
      applyChange(name, m);
    }
    renderedAt[name] = Date.parse(m.generated_at);
    env.sections[name] = {status: m.status, refreshed_at: m.refreshed_at, age_ms: m.age_ms, error: m.error};
    got[name] = at;
    fresh[name] = at;
    const whole = {section: name, seq: m.seq, status: m.status, refreshed_at: m.refreshed_at,
                   age_ms: m.age_ms, error: m.error, data: env[name]};
    // bytes: what this event cost on the wire (the page shows it to tests and the curious).
    post({kind: "section", data: whole, at, bytes: e.data.length});
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

// README, "The stream": a change applied to the section's value held.
function applyChange(name, m) {
  let value = env[name];
  const delta = Date.parse(m.generated_at) - (renderedAt[name] || Date.parse(m.generated_at));
  const ages = m.ages || [];
  const moveIn = (obj) => {
    if (!obj || typeof obj !== "object") return;
    for (const f of ages) {
      if (typeof obj[f] === "number") obj[f] = (Math.round(obj[f] * 1000) + delta) / 1000;
    }
  };
  if (Array.isArray(value)) {
    value.forEach(moveIn);
  } else if (value && typeof value === "object") {
    moveIn(value);
    for (const v of Object.values(value)) if (Array.isArray(v)) v.forEach(moveIn);
  }
  if (m.set) for (const [k, v] of Object.entries(m.set)) value[k] = v;
  const r = m.rows;
  if (!r) return;
  let list = r.at ? value[r.at] : value;
  const key = (row) => JSON.stringify(row[r.key]);
  if (r.removed) {
    const gone = new Set(r.removed.map((k) => JSON.stringify(k)));
    list = list.filter((row) => !gone.has(key(row)));
  }
  if (r.fill) {
    for (const row of list) {
      for (const [f, v] of Object.entries(r.fill)) if (row[f] !== null && row[f] !== undefined) row[f] = v;
    }
  }
  if (r.changed) {
    const at = new Map(list.map((row, i) => [key(row), i]));
    for (const d of r.changed) Object.assign(list[at.get(key(d))], d);
  }
  if (r.added) list = list.concat(r.added);
  if (r.order) {
    const byKey = new Map(list.map((row) => [key(row), row]));
    list = r.order.map((k) => byKey.get(JSON.stringify(k)));
  }
  if (r.at) value[r.at] = list; else env[name] = list;
}

onconnect = (e) => {
  const port = e.ports[0];
  ports.add(port);
  port.onmessage = (m) => { if (m.data === "close") ports.delete(port); };
  port.start();
  if (env) port.postMessage({kind: "state", data: env, got, fresh, mode});
  if (!source) open();
};
