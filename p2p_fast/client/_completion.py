"""How the client learns that tasks finished: pushed by the node, with lookups as the safety net.

A node that offers the task lane (``_lane``; ``task_lane_port`` in ``GET /v1/tasks/limits``) pushes the final task
events on it, the same documents as the event stream below, with the same resume rules: a reader thread connects,
says the last event seq it saw, and on the node's hello resyncs when the ``stream`` is new or there is a ``gap``. A
lane the node refuses (a wrong token) is given up for the event stream. Otherwise:

``GET /v1/events?types=task&results=1&final=1`` (docs/events.md) pushes every final transition with the result inline (up to
64 KiB). A reader thread resolves the futures from it. It resumes after a broken connection with ``Last-Event-ID``;
when the node says events were lost (``gap``, a new ``stream`` id after a restart, ``overflow``) the helper thread
resyncs every unfinished task by ``POST /v1/tasks/lookup``. The helper also fetches what an event does not carry (a
failed task's attempts, a result over 64 KiB), sends cancellations, and every ``SWEEP_S`` looks up the unfinished
tasks anyway, so no completion can be missed for good.

A node without the stream (404) is long-polled instead: the oldest unfinished tasks (up to ``CHUNK``; the node's
queue is first in, first out) are looked up with ``wait_s``, answered as soon as all are final.
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from p2p_fast.client._http import Http, NodeError
from p2p_fast.client._lane import LaneConnection
from p2p_fast.client._sse import SseEvent, SseParser

if TYPE_CHECKING:
    from p2p_fast.client._core import Engine

log = logging.getLogger(__name__)
CHUNK = 1000
WAIT_S = 1.0
SWEEP_S = 10.0
FINAL = ("completed", "failed", "cancelled")
MAX_PAUSE = 2.0
READY_WAIT_S = 5.0
READ_SIZE = 65536


class Completion:
    def __init__(self, engine: "Engine", events: bool = True, lane_port: int | None = None) -> None:
        self.engine = engine
        self.use_events = events
        self.lane_port = lane_port if events else None
        self.lane: LaneConnection | None = None  # the task lane, while it is open
        self.streaming = False  # the event stream is connected now
        self.more = threading.Event()
        self.ready = threading.Event()
        self.stopping = False
        self.lock = threading.Lock()
        self.lookups: collections.deque[str] = collections.deque()
        self.resync_needed = False
        self.cancels: collections.deque[str] = collections.deque()
        self.polls = 0
        self.reconnects = 0
        self.resyncs = 0
        self._stream_sock: Any = None
        self.threads = [threading.Thread(target=self._helper, name="p2p-client-lookup", daemon=True)]
        if self.lane_port is not None:
            self.threads.append(threading.Thread(target=self._lane_events, name="p2p-client-lane", daemon=True))
        elif events:
            self.threads.append(threading.Thread(target=self._events, name="p2p-client-events", daemon=True))

    def start(self) -> None:
        for t in self.threads:
            t.start()
        if self.use_events:
            self.ready.wait(READY_WAIT_S)  # submissions made after this are covered by the stream

    def added(self, ids: list[str]) -> None:
        if not self.streaming:
            self.more.set()

    def cancel(self, task_id: str) -> None:
        self.cancels.append(task_id)
        self.more.set()

    def stop(self) -> None:
        self.stopping = True
        self.more.set()
        lane = self.lane
        if lane is not None:
            lane.close()  # wakes its reader
        sock = self._stream_sock
        if sock is not None:
            try:
                sock.shutdown(2)  # wakes the reader blocked on the stream
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=self.engine.timeout + WAIT_S)

    # -- the helper thread: long polls (no stream), lookups, cancels, sweeps ---------------------------------------
    def _helper(self) -> None:
        http = Http(self.engine.api, self.engine.token, self.engine.timeout)
        pause = 0.05
        last_sweep = time.monotonic()
        try:
            while not self.stopping:
                try:
                    self._cancel_remote(http)
                    if self.streaming:
                        self.more.wait(SWEEP_S / 4)
                        self.more.clear()
                        with self.lock:
                            ids = list(dict.fromkeys(self.lookups))
                            self.lookups.clear()
                            if self.resync_needed:
                                self.resync_needed = False
                                self.resyncs += 1
                                ids = self.engine.pending_ids()
                        if time.monotonic() - last_sweep >= SWEEP_S:
                            last_sweep = time.monotonic()
                            ids = list(dict.fromkeys([*ids, *self.engine.pending_ids()]))
                        for i in range(0, len(ids), CHUNK):
                            self._lookup(http, ids[i:i + CHUNK], 0.0)
                    else:
                        ids = self.engine.pending_ids()[:CHUNK]
                        if not ids:
                            self.more.wait(SWEEP_S / 4)
                            self.more.clear()
                            continue
                        self._lookup(http, ids, WAIT_S)
                        self.polls += 1
                    pause = 0.05
                except NodeError as exc:
                    if exc.status and exc.status < 500 and exc.status != 429:
                        log.error("task lookup refused: %s", exc)
                    time.sleep(pause)
                    pause = min(pause * 2, MAX_PAUSE)
                except Exception:  # an answer we did not expect: say so, keep the futures' thread alive
                    log.exception("task lookup failed")
                    time.sleep(pause)
                    pause = min(pause * 2, MAX_PAUSE)
        finally:
            http.close()

    def _lookup(self, http: Http, ids: list[str], wait_s: float) -> None:
        if not ids:
            return
        doc = http.request("POST", "/v1/tasks/lookup", {"ids": ids, "wait_s": wait_s, "results": True},
                           timeout=self.engine.timeout + wait_s, idempotent=True)
        for task in doc["tasks"]:
            state = task.get("state")
            if state in FINAL:
                self.engine.finish(task, stash=True)  # perhaps from an event that beat its submission's answer
            elif state == "unknown":
                self.engine.finish({"id": task["id"], "state": "failed", "attempts": [],
                                    "error": "the node does not know this task (was its journal lost?)"})

    def _cancel_remote(self, http: Http) -> None:
        while self.cancels:
            task_id = self.cancels.popleft()
            try:
                http.request("POST", f"/v1/tasks/{task_id}/cancel", idempotent=True)
            except NodeError as exc:
                if exc.status == 0:
                    self.cancels.appendleft(task_id)
                    raise
                # 409: final already; the result that came is not wanted any more
            self.engine.finish({"id": task_id, "state": "cancelled", "error": "cancelled", "attempts": []})

    # -- the event stream reader ------------------------------------------------------------------------------------
    def _events(self) -> None:
        stream_id: str | None = None
        last_seq: int | None = None
        pause = 0.1
        while not self.stopping:
            try:
                stream_id, last_seq, supported = self._read_stream(stream_id, last_seq)
                if not supported:
                    log.info("the node has no event stream: long polls instead")
                    self.use_events = False
                    self.ready.set()
                    self.more.set()
                    return
                pause = 0.1
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if self.stopping:
                    return
                log.debug("event stream broke: %s", exc)
            except Exception:  # an event we did not expect: reconnect (and resync) rather than die
                log.exception("event stream reader failed; reconnecting")
                stream_id = None
            finally:
                self.streaming = False
            if self.stopping:
                return
            pause = self._wait_to_reconnect(pause)

    def _wait_to_reconnect(self, pause: float) -> float:
        """After the event stream or the task lane broke: count it, let the helper long-poll meanwhile, wait
        ``pause``; returns the next pause (doubling up to ``MAX_PAUSE``)."""
        self.reconnects += 1
        self.more.set()  # while disconnected, the helper long-polls
        time.sleep(pause)
        return min(pause * 2, MAX_PAUSE)

    def _read_stream(self, stream_id: str | None, last_seq: int | None) -> tuple[str | None, int | None, bool]:
        h = Http(self.engine.api, self.engine.token, self.engine.timeout)
        cls = http.client.HTTPSConnection if h.https else http.client.HTTPConnection
        conn = cls(h.host, h.port, timeout=None)  # an idle stream is normal (keepalives every 15 s)
        headers = {k: v for k, v in h.headers.items() if k == "Authorization"}
        headers["Accept"] = "text/event-stream"
        if last_seq is not None:
            headers["Last-Event-ID"] = str(last_seq)
        try:
            conn.connect()
            self._stream_sock = conn.sock
            if self.stopping:
                return stream_id, last_seq, True
            conn.request("GET", h.prefix + "/v1/events?types=task&results=1&final=1", headers=headers)
            resp = conn.getresponse()
            if resp.status == 404:
                return stream_id, last_seq, False
            if resp.status != 200:
                raise ValueError(f"GET /v1/events: HTTP {resp.status}: {resp.read(300)!r}")
            parser = SseParser(chunked=bool(resp.chunked))
            fp = resp.fp  # the body's raw bytes, as they arrive (the parser undoes the chunking)
            while not self.stopping:
                data = fp.read1(READ_SIZE) if fp is not None else b""
                if not data:
                    raise ValueError("the event stream ended")
                for ev in parser.feed(data):
                    stream_id, last_seq = self._on_event(ev, stream_id, last_seq)
                if parser.ended:
                    raise ValueError("the event stream ended")
            return stream_id, last_seq, True
        finally:
            self._stream_sock = None
            conn.close()

    def _on_hello(self, hello: dict[str, Any], stream_id: str | None,
                  last_seq: int | None) -> tuple[str | None, int | None]:
        """The node's hello (event stream or lane): resync after a restart, a first start or lost events."""
        if stream_id is None or hello["stream"] != stream_id or hello.get("gap") or last_seq is None:
            self._resync()  # a restart, a first start, or events lost: look everything up
            last_seq = hello["seq"]
        stream_id = hello["stream"]
        self.streaming = True
        self.ready.set()
        return stream_id, last_seq

    def _on_event(self, ev: SseEvent, stream_id: str | None, last_seq: int | None) -> tuple[str | None, int | None]:
        if ev.event == "hello":
            stream_id, last_seq = self._on_hello(json.loads(ev.data), stream_id, last_seq)
        elif ev.event == "overflow":
            raise ValueError("the node dropped this subscriber (overflow)")
        elif ev.event == "task":
            if ev.id is not None:
                last_seq = int(ev.id)
            self._on_task(json.loads(ev.data))
        return stream_id, last_seq

    # -- the task lane reader ---------------------------------------------------------------------------------------
    def _lane_events(self) -> None:
        """Keep the lane open: connect, hello, read until it breaks, again (with the last seq seen) until stopped."""
        engine = self.engine
        host = Http(engine.api, engine.token, engine.timeout).host
        stream_id: str | None = None
        last_seq: list[int | None] = [None]
        pause = 0.1
        assert self.lane_port is not None

        def on_event(doc: dict[str, Any]) -> None:
            last_seq[0] = doc["seq"]
            self._on_task(doc["data"])

        first = True
        while not self.stopping:
            try:
                if not first:  # a restarted node may listen on another port (http.task_lane_port 0): ask again
                    self.lane_port = self._lane_port_now()
                    if self.lane_port is None:
                        log.info("the node no longer offers the task lane: using its event stream")
                        self._events()
                        return
                try:
                    lane = LaneConnection(host, self.lane_port, engine.token, engine.timeout)
                except OSError as exc:
                    if not first:
                        raise
                    # Never reached: the node's API is behind something that forwards its port only (a
                    # Kubernetes Service, a proxy). The event stream goes through the API's port.
                    log.info("cannot reach the node's task lane at %s:%s (%s): using HTTP and its event stream",
                             host, self.lane_port, exc)
                    self.lane_port = None
                    self._events()
                    return
                first = False
                try:
                    hello = lane.open(last_seq[0])
                except BaseException:
                    lane.close()
                    raise
                self.lane = lane
                if self.stopping:
                    lane.close()
                    return
                stream_id, last_seq[0] = self._on_hello(hello, stream_id, last_seq[0])
                pause = 0.1
                lane.run(on_event)
            except NodeError as exc:
                if exc.status == 401:  # the node refuses our token here: HTTP will say so on every request too
                    log.error("the node refused the task lane (%s): using HTTP and its event stream", exc)
                    self.lane_port = None
                    self.streaming = False
                    self.lane = None
                    self._events()
                    return
                log.debug("task lane broke: %s", exc)
            except (OSError, ValueError) as exc:
                if self.stopping:
                    return
                log.debug("task lane broke: %s", exc)
            except Exception:  # a frame we did not expect: reconnect (and resync) rather than die
                log.exception("task lane reader failed; reconnecting")
                stream_id = None
            finally:
                self.lane = None
                self.streaming = False
            if self.stopping:
                return
            pause = self._wait_to_reconnect(pause)

    def _lane_port_now(self) -> int | None:
        from p2p_fast.client._core import Limits

        http = Http(self.engine.api, self.engine.token, self.engine.timeout)
        try:
            return Limits.from_node(http).task_lane_port
        finally:
            http.close()

    def _resync(self) -> None:
        with self.lock:
            self.resync_needed = True
        self.more.set()

    def _on_task(self, ev: dict[str, Any]) -> None:
        what = ev.get("event")
        if what not in FINAL:
            return
        if what == "completed" and "result" in ev:
            self.engine.finish({"id": ev["id"], "state": "completed", "result": ev["result"],
                                "result_encoding": "base64"}, stash=True)
        elif what == "cancelled":
            self.engine.finish({"id": ev["id"], "state": "cancelled", "error": ev.get("error") or "cancelled",
                                "attempts": []}, stash=True)
        else:  # failed (its attempts), or a result over the inline limit: one lookup
            self.lookups.append(ev["id"])
            self.more.set()
