// Drawing: the network graph, the per-worker task timeline, batch progress, tables and small time series.
// Everything is built with DOM calls and textContent (gossip texts and peer data are untrusted: no innerHTML).
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") Object.assign(e.style, v); // CSSOM: the page's CSP forbids style attributes
    else e.setAttribute(k, v);
  }
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function short(id) { return id ? "…" + String(id).slice(-6) : "-"; }

function fmtAge(ts) {
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function fmtDuration(s) {
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + (s % 60) + " s";
}

const ROLE_COLOR = { worker: "#2f6fd6", bootstrap: "#d6782f", relay: "#7b4fd0" };

// nodes: [{id, role, capabilities, self, connected, relayed, rtt}]
function drawGraph(box, nodes) {
  const W = box.clientWidth || 600, H = box.clientWidth < 500 ? 300 : 360;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, "data-nodes": String(nodes.length), role: "img",
    "aria-label": `network graph, ${nodes.length} nodes` });
  const self = nodes.find((n) => n.self);
  const others = nodes.filter((n) => !n.self).sort((a, b) => (a.id < b.id ? -1 : 1));
  const top = 24; // a strip for this node's label, above the circle of peers
  const cx = W / 2, cy = (H + top) / 2, r = Math.max(60, Math.min(W, H - top) / 2 - 48);
  const pos = new Map();
  if (self) pos.set(self.id, [cx, cy]);
  others.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, others.length) - Math.PI / 2;
    pos.set(n.id, [cx + r * Math.cos(a), cy + r * Math.sin(a)]);
  });
  for (const n of others) {
    const [x, y] = pos.get(n.id);
    if (!n.connected || !self) continue;
    root.appendChild(svg("line", { class: "edge" + (n.relayed ? " relayed" : ""), x1: cx, y1: cy, x2: x, y2: y }));
    if (n.rtt !== null && n.rtt !== undefined) {
      // Half way along the edge, moved off it along its normal (never on a node or under a label).
      const len = Math.hypot(x - cx, y - cy) || 1, nx = -(y - cy) / len, ny = (x - cx) / len;
      const side = ny > 0 ? -1 : 1;
      root.appendChild(svg("text", { class: "edge-label", "text-anchor": "middle",
        x: cx + (x - cx) * 0.5 + side * nx * 10, y: cy + (y - cy) * 0.5 + side * ny * 10 + 4 },
        n.rtt < 10 ? n.rtt.toFixed(2) + " ms" : Math.round(n.rtt) + " ms"));
    }
  }
  for (const n of nodes) {
    const [x, y] = pos.get(n.id);
    const g = svg("g", { class: "node" + (n.self ? " self" : "") + (!n.self && !n.connected ? " known" : ""),
      "data-peer": n.id, transform: `translate(${x},${y})` });
    g.appendChild(svg("title", {}, `${n.id}\nrole: ${n.role}\ncapabilities: ${(n.capabilities || []).join(", ") || "-"}`
      + (n.self ? "\n(this node)" : n.connected ? (n.relayed ? "\nconnected via a relay" : "\nconnected directly")
        : "\nknown from gossip, not connected")));
    g.appendChild(svg("circle", { r: n.self ? 16 : 12, fill: n.self ? "#1d2330" : (ROLE_COLOR[n.role] || "#8d97a8") }));
    const what = n.role + ((n.capabilities || []).length ? ": " + n.capabilities.join(",") : "");
    if (n.self) {
      // This node's label goes in the corner: under the centre it would sit on the edges.
      g.appendChild(svg("text", { x: 0, y: 4, "text-anchor": "middle", class: "self-mark" }, "me"));
      root.appendChild(svg("text", { x: 8, y: 16, class: "self-label" }, `this node ${short(n.id)} · ${what}`));
    } else {
      // Labels away from the centre, so that they do not sit on this node's edge.
      const above = y < cy - 1;
      g.appendChild(svg("text", { x: 0, y: above ? -31 : 26, "text-anchor": "middle" }, short(n.id)));
      g.appendChild(svg("text", { x: 0, y: above ? -18 : 39, "text-anchor": "middle", class: "edge-label" }, what));
    }
    root.appendChild(g);
  }
  box.replaceChildren(root);
}

// bars: [{worker, start, end|null, outcome}] ; a Dask-like task stream, one lane per worker, the last `span` s.
function drawTimeline(box, bars, workers, span) {
  const W = box.clientWidth || 600, lane = 16, left = 70;
  const lanes = workers.length ? workers : ["-"];
  const H = lanes.length * lane + 18;
  const now = Date.now() / 1000, t0 = now - span;
  const x = (t) => left + ((Math.max(t, t0) - t0) / span) * (W - left - 4);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, height: H, "data-bars": String(bars.length) });
  lanes.forEach((w, i) => {
    root.appendChild(svg("text", { class: "lane-label", x: 2, y: i * lane + 12 }, short(w)));
    root.appendChild(svg("line", { class: "axis", x1: left, x2: W, y1: i * lane + lane, y2: i * lane + lane }));
  });
  const index = new Map(lanes.map((w, i) => [w, i]));
  for (const b of bars) {
    const end = b.end === null ? now : b.end;
    if (end < t0 || !index.has(b.worker)) continue;
    const x1 = x(b.start), x2 = Math.max(x(end), x1 + 1.5);
    root.appendChild(svg("rect", { class: "bar " + b.outcome, x: x1, y: index.get(b.worker) * lane + 2,
      width: x2 - x1, height: lane - 5 }));
  }
  for (let s = 0; s <= span; s += span / 6) {
    root.appendChild(svg("text", { class: "lane-label", x: x(t0 + s) - 8, y: H - 2 }, s === span ? "now" : "-" + Math.round(span - s) + "s"));
  }
  box.replaceChildren(root);
}

function drawBatches(box, batches) {
  const items = batches.map((b) => {
    const div = el("div", { class: "batch" });
    div.appendChild(el("div", {}, `batch of ${b.total} (${b.types.join(", ")}): ${b.done} done` + (b.failed ? `, ${b.failed} failed` : "")
      + ` · ${fmtAge(b.created)}`));
    const bar = el("div", { class: "progress" });
    bar.appendChild(el("div", { class: "done", style: { width: `${(100 * b.done) / b.total}%` } }));
    bar.appendChild(el("div", { class: "bad", style: { width: `${(100 * b.failed) / b.total}%` } }));
    div.appendChild(bar);
    return div;
  });
  box.replaceChildren(...items);
}

function fillTable(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = el("tr", cells.attrs || {});
    for (const c of cells.cols) {
      const td = typeof c === "object" && c !== null ? el("td", c.attrs || {}, c.text) : el("td", {}, c);
      tr.appendChild(td);
    }
    return tr;
  }));
}

const PALETTE = ["#2f6fd6", "#d6782f", "#2e9d57", "#7b4fd0", "#d1364a", "#1aa3a3", "#8a6d3b", "#5b6472"];

// series: {name: [values...]} on a shared x (one point per stats sample)
function drawChart(box, title, series) {
  const wrap = el("div", { class: "chart" });
  wrap.appendChild(el("h4", {}, title));
  const W = 300, H = 90;
  const all = Object.values(series).flat();
  const max = Math.max(1, ...all);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  const key = el("div", { class: "key" });
  Object.entries(series).forEach(([name, vals], i) => {
    const color = PALETTE[i % PALETTE.length];
    if (vals.length > 1) {
      const step = W / Math.max(1, vals.length - 1);
      const pts = vals.map((v, j) => `${(j * step).toFixed(1)},${(H - 4 - (v / max) * (H - 10)).toFixed(1)}`);
      root.appendChild(svg("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.5 }));
    }
    const last = vals.length ? vals[vals.length - 1] : 0;
    const s = el("span", { style: { color } }, `■ ${name} ${last < 10 ? last.toFixed(1) : Math.round(last)}`);
    key.appendChild(s);
  });
  root.appendChild(svg("text", { x: 2, y: 10, class: "lane-label" }, "max " + (max < 10 ? max.toFixed(1) : Math.round(max))));
  wrap.appendChild(root);
  wrap.appendChild(key);
  return wrap;
}
