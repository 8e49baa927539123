// The node's API from the page: JSON calls and the event stream, both with the bearer token when there is one.
// EventSource cannot send an Authorization header, so the stream is read with fetch() and parsed here
// (Server-Sent Events framing: "id:", "event:", "data:" lines, a blank line ends a frame, ":" is a comment).
"use strict";

const TOKEN_KEY = "p2p-fast-api-token"; // sessionStorage: this tab only, gone when it closes

class Unauthorized extends Error {}

const api = {
  token() { return sessionStorage.getItem(TOKEN_KEY); },
  setToken(t) { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); },
  headers(extra) {
    const h = Object.assign({ "Accept": "application/json" }, extra || {});
    const t = api.token();
    if (t) h["Authorization"] = "Bearer " + t;
    return h;
  },
  async get(path) {
    const r = await fetch(path, { headers: api.headers(), cache: "no-store" });
    if (r.status === 401) throw new Unauthorized(path);
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  },
};

// Follows GET /v1/events for ever: reconnects with Last-Event-ID after a break (backoff up to 5 s), and calls
// handlers.resync() when events were lost (hello.gap) or the node restarted (another stream id).
class EventStream {
  constructor(handlers) {
    this.h = handlers;
    this.lastId = null;
    this.streamId = null;
    this.stopped = false;
    this.controller = null;
  }

  stop() { this.stopped = true; if (this.controller) this.controller.abort(); }

  async run() {
    let backoff = 500;
    while (!this.stopped) {
      try {
        await this.once();
        backoff = 500;
      } catch (e) {
        if (e instanceof Unauthorized) { this.h.unauthorized(); return; }
        if (this.stopped) return;
      }
      this.h.status(false);
      await new Promise((ok) => setTimeout(ok, backoff));
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  async once() {
    const headers = api.headers({ "Accept": "text/event-stream" });
    if (this.lastId !== null) headers["Last-Event-ID"] = String(this.lastId);
    this.controller = new AbortController();
    const r = await fetch("/v1/events?results=0", { headers, cache: "no-store", signal: this.controller.signal });
    if (r.status === 401) throw new Unauthorized("/v1/events");
    if (!r.ok || !r.body) throw new Error("/v1/events: HTTP " + r.status);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, end);
        buf = buf.slice(end + 2);
        this.frame(frame);
      }
    }
  }

  frame(text) {
    let type = "message", id = null;
    const data = [];
    for (const line of text.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "id") id = Number(value);
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let doc;
    try { doc = JSON.parse(data.join("\n")); } catch (e) { return; }
    if (type === "hello") {
      const restarted = this.streamId !== null && doc.stream !== this.streamId;
      const first = this.streamId === null;
      this.streamId = doc.stream;
      if (restarted || doc.gap) this.lastId = doc.seq;
      else if (this.lastId === null) this.lastId = doc.seq;
      this.h.status(true);
      this.h.hello(doc, first || restarted || doc.gap);
      return;
    }
    if (id !== null) this.lastId = id;
    if (type === "overflow") { this.h.status(false); return; } // the node dropped us; run() reconnects
    this.h.event(type, doc);
  }
}
