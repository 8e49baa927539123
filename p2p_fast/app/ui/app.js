// The dashboard's state: a snapshot from the JSON API, then kept current by the event stream (sse.js);
// drawn by views.js at most twice a second. Credits and reputation are not events: polled every 5 s.
"use strict";

const MAX_TASKS = 5000, MAX_SAMPLES = 90, SPAN_S = 60, FINAL = ["completed", "failed", "cancelled"];

const state = {
  self: null, status: null, peers: new Map(), tasks: new Map(), stats: [], ledger: null, gossip: [],
  seq: 0, stream: null,
};

const $ = (id) => document.getElementById(id);

// -- events -------------------------------------------------------------------------------------------------------
function upsertTask(ev) {
  let t = state.tasks.get(ev.id);
  if (!t) {
    t = { id: ev.id, type: ev.type, attempts: [], created: ev.created || ev.ts };
    state.tasks.set(ev.id, t);
    if (state.tasks.size > MAX_TASKS) state.tasks.delete(state.tasks.keys().next().value);
  }
  Object.assign(t, { state: ev.state, worker: ev.worker, attempt: ev.attempt, error: ev.error, ts: ev.ts });
  if (ev.created) t.created = ev.created;
  const last = t.attempts[t.attempts.length - 1];
  if (ev.event === "assigned") {
    if (last && last.end === null) { last.end = ev.ts; last.outcome = "retry"; }
    t.attempts.push({ worker: ev.worker, start: ev.ts, end: null, outcome: "running" });
  } else if (ev.event === "retry" && last && last.end === null) {
    last.end = ev.ts; last.outcome = "retry";
  } else if (FINAL.includes(ev.event) && last && last.end === null) {
    last.end = ev.ts; last.outcome = ev.event;
  }
}

function onEvent(type, doc) {
  if (type === "task") upsertTask(doc);
  else if (type === "peer") {
    const p = state.peers.get(doc.peer_id) || { id: doc.peer_id, role: "?", capabilities: [], connected: false };
    if (doc.role && doc.role !== "?") p.role = doc.role;
    if (doc.capabilities && doc.capabilities.length) p.capabilities = doc.capabilities;
    if (doc.event === "connected") { p.connected = true; p.relayed = !!doc.relayed; if (doc.rtt_ms != null) p.rtt = doc.rtt_ms; }
    if (doc.event === "disconnected") p.connected = false;
    state.peers.set(doc.peer_id, p);
  } else if (type === "gossip") {
    state.gossip.unshift(doc);
    state.gossip.length = Math.min(state.gossip.length, 50);
  } else if (type === "stats") {
    state.stats.push(doc);
    if (state.stats.length > MAX_SAMPLES) state.stats.shift();
    for (const [pid, rtt] of Object.entries(doc.rtt_ms || {})) {
      const p = state.peers.get(pid);
      if (p) p.rtt = rtt;
    }
  }
  schedule();
}

// -- snapshot (first connection, or events were lost) -------------------------------------------------------------
async function loadSnapshot() {
  const [status, peers, gossip] = await Promise.all([api.get("/v1/status"), api.get("/v1/peers"), api.get("/v1/gossip?limit=50")]);
  state.status = status;
  state.self = { id: status.peer_id, role: status.role, capabilities: status.capabilities };
  state.peers = new Map(peers.map((p) => [p.peer_id, { id: p.peer_id, role: p.role, capabilities: p.capabilities,
    connected: true, relayed: p.relayed, rtt: p.rtt_ms }]));
  state.gossip = gossip.slice().reverse();
  if (status.tasks) {
    const counts = status.tasks;
    const total = ["pending", "running", "completed", "failed", "cancelled"].reduce((a, k) => a + (counts[k] || 0), 0);
    const recent = await api.get(`/v1/tasks?limit=200&offset=${Math.max(0, total - 200)}`);
    for (const t of recent.tasks) {
      if (!state.tasks.has(t.id)) {
        state.tasks.set(t.id, { id: t.id, type: t.type, state: t.state, worker: t.worker, attempt: t.attempts,
          error: t.error, ts: null, created: null, attempts: [] });
      }
    }
  }
  await pollLedger();
  schedule();
}

async function pollLedger() {
  if (!state.status || !state.status.tasks) return;
  try { state.ledger = await api.get("/v1/ledger?limit=0&by_peer=true"); } catch (e) { if (e instanceof Unauthorized) throw e; }
}

async function pollStatus() {
  try { state.status = await api.get("/v1/status"); schedule(); } catch (e) { /* the stream shows the state */ }
}

// -- rendering ----------------------------------------------------------------------------------------------------
let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  setTimeout(() => { pending = false; render(); }, 400);
}

function latestStats() { return state.stats[state.stats.length - 1] || null; }

function render() {
  renderNode();
  renderGraph();
  renderTasks();
  renderWorkers();
  renderCharts();
}

function renderNode() {
  const s = state.status, st = latestStats();
  if (!s) return;
  $("node-title").textContent = `${s.role} ${s.peer_id}`;
  const rows = [
    ["peer ID", s.peer_id], ["role", s.role], ["version", s.version],
    ["uptime", fmtDuration(st ? st.uptime_s : s.uptime_s)],
    ["addresses", s.listen_addrs.join("\n")],
    ["DHT table", `${st ? st.dht_routing_table : s.dht.routing_table} peers (${s.dht.mode})`],
    ["peers", `${st ? st.peers : s.peers} connected, ${st ? st.live_peers : s.live_peers} live`],
    ["connections", st ? st.connections : s.connections],
    ["capabilities", (s.capabilities || []).join(", ") || "-"],
    ["ready", s.ready ? "yes" : "no"],
  ];
  const tasks = st && st.tasks ? st.tasks : s.tasks;
  if (tasks) rows.push(["tasks", `${tasks.pending} pending, ${tasks.running} running, ${tasks.completed} completed, ${tasks.failed} failed`]);
  const l = state.ledger;
  if (l) rows.push(["credits", `balance ${l.balance} (earned ${l.earned}, spent ${l.spent})`]);
  rows.push(["event stream", state.stream ? `#${state.seq} of ${state.stream}` : "-"]);
  const dl = $("node-info");
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function renderGraph() {
  if (!state.self) return;
  const nodes = [{ id: state.self.id, role: state.self.role, capabilities: state.self.capabilities, self: true }];
  const seen = new Set([state.self.id]);
  for (const p of state.peers.values()) {
    if (seen.has(p.id) || (!p.connected && !p.live)) continue;
    seen.add(p.id);
    nodes.push({ id: p.id, role: p.role, capabilities: p.capabilities, connected: p.connected, relayed: p.relayed, rtt: p.rtt });
  }
  const st = latestStats();
  for (const w of (st && st.workers) || []) {
    if (seen.has(w.peer_id)) continue;
    seen.add(w.peer_id);
    nodes.push({ id: w.peer_id, role: w.role, capabilities: w.capabilities, connected: false });
  }
  $("graph-count").textContent = `(${nodes.length} nodes)`;
  drawGraph($("graph"), nodes);
}

function renderTasks() {
  const tasks = Array.from(state.tasks.values());
  const counts = { pending: 0, running: 0, completed: 0, failed: 0, cancelled: 0 };
  for (const t of tasks) counts[t.state] = (counts[t.state] || 0) + 1;
  $("task-counts").textContent = `(${tasks.length} shown: ` +
    Object.entries(counts).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ") + ")";
  const recent = tasks.slice(-100).reverse();
  fillTable($("tasks").tBodies[0], recent.map((t) => ({
    attrs: { "data-id": t.id, "data-state": t.state },
    cols: [{ text: t.id.slice(0, 12), attrs: { class: "mono", title: t.id } }, t.type,
      { text: t.state, attrs: { class: "state " + t.state, title: t.error || "" } },
      { text: short(t.worker), attrs: { class: "mono", title: t.worker || "" } }, t.attempt, t.ts ? fmtAge(t.ts) : "-"],
  })));
  const bars = [], workers = new Set();
  for (const t of tasks) for (const a of t.attempts) { bars.push(a); workers.add(a.worker); }
  drawTimeline($("timeline"), bars.slice(-3000), Array.from(workers).sort(), SPAN_S);
  const batches = new Map();
  for (const t of tasks) {
    if (!t.created) continue;
    const b = batches.get(t.created) || { created: t.created, total: 0, done: 0, failed: 0, types: [] };
    b.total += 1;
    if (!b.types.includes(t.type)) b.types.push(t.type);
    if (t.state === "completed") b.done += 1;
    if (t.state === "failed" || t.state === "cancelled") b.failed += 1;
    batches.set(t.created, b);
  }
  drawBatches($("batches"), Array.from(batches.values()).filter((b) => b.total > 1)
    .sort((a, b) => b.created - a.created).slice(0, 4));
}

// Capabilities that are roles of the network, not kinds of task: peers with only these run no tasks.
const NETWORK_CAPS = ["bootstrap", "discovery", "relay", "nat-traversal"];
function taskCaps(caps) { return (caps || []).filter((c) => !NETWORK_CAPS.includes(c)); }

function renderWorkers() {
  const st = latestStats();
  const rep = (state.ledger && state.ledger.reputation) || {};
  const credits = (state.ledger && state.ledger.by_peer) || {};
  const rows = [];
  if (st && state.self && st.worker && st.worker.slots && taskCaps(state.self.capabilities).length) {
    rows.push({ id: state.self.id, role: state.self.role + " (this node)", capabilities: state.self.capabilities,
      slots: st.worker.slots, free: st.worker.free, queued: st.worker.queued, load: st.worker.load });
  }
  for (const w of (st && st.workers) || []) {
    if ((state.self && w.peer_id === state.self.id) || !taskCaps(w.capabilities).length) continue;
    rows.push({ id: w.peer_id, role: w.role, capabilities: w.capabilities, slots: w.slots, free: w.free,
      queued: w.queued, load: w.load });
  }
  fillTable($("workers").tBodies[0], rows.map((w) => {
    const r = rep[w.id], c = credits[w.id] || {};
    return { attrs: { "data-peer": w.id }, cols: [{ text: short(w.id), attrs: { class: "mono", title: w.id } }, w.role,
      (w.capabilities || []).join(", "), w.slots, w.free, w.queued, w.load,
      r ? `${r.score} (${r.successes}/${r.failures}/${r.timeouts})` : "-", c.paid || 0, c.received || 0] };
  }));
}

function topicName(t) { const parts = t.split("/"); return parts[parts.length - 1] || t; }

function rates(pick) {
  // pick(sample) -> {name: cumulative}; returns {name: [per-second rates]} between consecutive samples
  const out = {};
  const s = state.stats;
  for (let i = 1; i < s.length; i++) {
    const dt = Math.max(0.1, s[i].ts - s[i - 1].ts), a = pick(s[i - 1]), b = pick(s[i]);
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      (out[k] = out[k] || new Array(i - 1).fill(0)).push(Math.max(0, ((b[k] || 0) - (a[k] || 0)) / dt));
    }
  }
  return out;
}

function byTopic(m) { const o = {}; for (const [k, v] of Object.entries(m || {})) o[topicName(k)] = (o[topicName(k)] || 0) + v; return o; }
function byReason(list) { const o = {}; for (const d of list || []) o[d.reason] = (o[d.reason] || 0) + d.count; return o; }

function renderCharts() {
  const charts = [
    drawChart(el("div"), "gossip messages in, by topic", rates((s) => byTopic(s.messages_in))),
    drawChart(el("div"), "gossip messages out, by topic", rates((s) => byTopic(s.messages_out))),
    drawChart(el("div"), "rejected, by reason", rates((s) => byReason(s.rejected))),
    drawChart(el("div"), "dropped (subscriber behind), by reason", rates((s) => byReason(s.dropped))),
    drawChart(el("div"), "tasks finished", rates((s) => (s.tasks ? { completed: s.tasks.completed, failed: s.tasks.failed } : {}))),
  ];
  $("charts").replaceChildren(...charts);
  $("gossip").replaceChildren(...state.gossip.slice(0, 20).map((g) =>
    el("li", {}, `${short(g.sender)}: ${g.text.length > 200 ? g.text.slice(0, 200) + "…" : g.text}`)));
}

// -- start-up, token ----------------------------------------------------------------------------------------------
let stream = null, timers = [];

function showPrompt(message) {
  if (stream) stream.stop();
  timers.forEach(clearInterval);
  timers = [];
  $("app").hidden = true;
  $("token-prompt").hidden = false;
  $("token-error").textContent = message || "";
  $("conn").textContent = "locked";
  $("token-input").focus();
}

async function start() {
  try {
    await api.get("/v1/status");
  } catch (e) {
    if (e instanceof Unauthorized) { showPrompt(api.token() ? "That token was refused." : ""); return; }
    $("conn").textContent = "node unreachable";
    setTimeout(start, 3000);
    return;
  }
  $("token-prompt").hidden = true;
  $("app").hidden = false;
  stream = new EventStream({
    hello: (doc, resync) => {
      state.stream = doc.stream; state.seq = doc.seq;
      if (resync) loadSnapshot().catch((e) => { if (e instanceof Unauthorized) showPrompt("The token was refused."); });
    },
    event: (type, doc) => { state.seq = Math.max(state.seq, stream.lastId || 0); onEvent(type, doc); },
    status: (live) => { const c = $("conn"); c.textContent = live ? "live" : "reconnecting"; c.className = "conn " + (live ? "live" : "off"); },
    unauthorized: () => showPrompt("The token was refused."),
  });
  stream.run();
  timers.push(setInterval(() => pollLedger().catch(() => {}), 5000));
  timers.push(setInterval(pollStatus, 10000));
  timers.push(setInterval(renderTasks, 1000)); // the timeline moves with the clock
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    api.setToken($("token-input").value.trim());
    $("token-input").value = "";
    start();
  });
  window.addEventListener("resize", schedule);
  start();
});
