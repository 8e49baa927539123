"""The node's event bus: what ``GET /v1/events`` streams (task transitions, peers, gossip, stats).

Why a ring plus per-subscriber channels: the dispatcher emits on its hot path (thousands of tasks/s), so ``emit`` is a
counter bump, one small object and a ``deque`` append, plus one ``send_nowait`` per subscriber that wants the type.
Nothing in ``emit`` awaits or blocks. The bounded history (``HISTORY`` events) lets a client that lost its connection
resume from ``Last-Event-ID`` without missing anything; older than that, or after a restart (a new ``stream`` id),
it must resync by lookup. The history is kept while somebody subscribes and for ``KEEP_AFTER_LAST`` seconds after
the last subscriber left (a page reload, a network blip); otherwise the bus only counts (``recording`` is false, and
producers skip building the event at all), so a node nobody watches pays one attribute test per transition. A subscriber whose bounded buffer (``BUFFER`` events) fills up is dropped: it is told
``overflow`` if it reads again within ``OVERFLOW_GRACE`` seconds, and is then disconnected. A slow browser can never
hold the node back or make it grow without bound.

Events hold the data dict and, for final task events, a reference to the result bytes the dispatcher keeps anyway
(no copy); each event's JSON line is made once, when the first subscriber needs it.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import deque
from typing import Any, Callable, Iterable

import trio

from p2p_fast.core import metrics

TYPES = ("task", "peer", "stats", "gossip")
HISTORY = 10000
BUFFER = 2000
MAX_INLINE_RESULT = 64 * 1024
OVERFLOW_GRACE = 10.0
KEEP_AFTER_LAST = 120.0
FINAL_TASK_EVENTS = frozenset(("completed", "failed", "cancelled"))


class Event:
    __slots__ = ("seq", "type", "data", "result", "_line", "_line_result", "_json", "_json_result")

    def __init__(self, seq: int, type_: str, data: dict[str, Any], result: bytes | None) -> None:
        self.seq = seq
        self.type = type_
        self.data = data
        self.result = result
        self._line: bytes | None = None
        self._line_result: bytes | None = None
        self._json: str | None = None
        self._json_result: str | None = None

    def json(self, with_result: bool) -> str:
        """The event's document as one line of JSON (``result`` in base64 when asked and small), made once: what
        the SSE frame carries and what the task lane (``app.api.lane``) sends."""
        if with_result and self.result is not None:
            if self._json_result is None:
                doc = dict(self.data, result=base64.b64encode(self.result).decode())
                self._json_result = json.dumps(doc, separators=(",", ":"), default=str)
            return self._json_result
        if self._json is None:
            self._json = json.dumps(self.data, separators=(",", ":"), default=str)
        return self._json

    def encode(self, with_result: bool) -> bytes:
        """The SSE frame: ``id``, ``event`` and one line of JSON (``result`` in base64 when asked and small)."""
        if with_result and self.result is not None:
            if self._line_result is None:
                self._line_result = self._frame(self.json(True))
            return self._line_result
        if self._line is None:
            self._line = self._frame(self.json(False))
        return self._line

    def _frame(self, body: str) -> bytes:
        return f"id: {self.seq}\nevent: {self.type}\ndata: {body}\n\n".encode()


class Subscriber:
    def __init__(self, types: frozenset[str], results: bool, final_only: bool = False,
                 deliver: Callable[["Event"], None] | None = None) -> None:
        self.types = types
        # Called with each event it takes, inside ``emit``, instead of queueing it (the task lane writes it to its
        # socket right there: app/api/lane_writer.py). Must not block or raise; bounding what it keeps is its own job.
        self.deliver = deliver
        self.results = results
        # Only the last event of each task (completed, failed, cancelled): what a client waiting for results reads;
        # a third of the task events, so a third of the JSON and socket writes for the node and for the client.
        self.final_only = final_only
        self.send, self.receive = trio.open_memory_channel[Event](BUFFER)
        self.overflowed = False
        self.dropped = trio.Event()  # set on overflow: the handler gives the client OVERFLOW_GRACE, then hangs up

    def takes(self, ev: "Event") -> bool:
        """Whether this subscriber receives ``ev``."""
        if ev.type not in self.types:
            return False
        return not (self.final_only and ev.type == "task" and ev.data.get("event") not in FINAL_TASK_EVENTS)


class EventBus:
    """One per node process. ``stream`` names this process's sequence of events (new after every restart)."""

    def __init__(self, history: int = HISTORY) -> None:
        self.stream = secrets.token_hex(8)
        self.seq = 0
        self.history: deque[Event] = deque(maxlen=history)
        self.subscribers: list[Subscriber] = []
        self.overflows = 0
        self.recording = False  # keeping history: subscribers now, or the last one left < KEEP_AFTER_LAST ago
        self._last_left = 0.0

    @property
    def oldest(self) -> int:
        """The oldest sequence number still in the history (``seq + 1`` when it is empty)."""
        return self.history[0].seq if self.history else self.seq + 1

    def skip(self) -> None:
        """An event nobody can see (``recording`` is false): only its number is used up, so that a client
        resuming from before it is told about the gap."""
        self.seq += 1

    def emit(self, type_: str, data: dict[str, Any], result: bytes | None = None) -> None:
        self.seq += 1
        if not self.recording:
            return
        if not self.subscribers and time.monotonic() - self._last_left > KEEP_AFTER_LAST:
            self.recording = False
            self.history.clear()  # ``oldest`` is now past everything: a resume from before is a gap
            return
        if result is not None and len(result) > MAX_INLINE_RESULT:
            result = None
        ev = Event(self.seq, type_, data, result)
        self.history.append(ev)
        if self.subscribers:
            for sub in self.subscribers:
                if type_ in sub.types and (not sub.final_only or sub.takes(ev)):
                    if sub.deliver is not None:
                        sub.deliver(ev)
                        continue
                    try:
                        sub.send.send_nowait(ev)
                    except trio.WouldBlock:
                        self._overflow(sub)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # unsubscribing: its handler removes it
            if any(s.overflowed for s in self.subscribers):
                self.subscribers = [s for s in self.subscribers if not s.overflowed]
                metrics.EVENT_SUBSCRIBERS.set(len(self.subscribers))
                if not self.subscribers:
                    self._last_left = time.monotonic()

    def _overflow(self, sub: Subscriber) -> None:
        sub.overflowed = True
        self.overflows += 1
        metrics.EVENT_OVERFLOWS.inc()
        sub.send.close()  # its handler stops at the end of the buffer, says overflow and ends
        sub.dropped.set()

    def subscribe(self, types: Iterable[str], since: int | None, results: bool,
                  final_only: bool = False,
                  deliver: Callable[[Event], None] | None = None) -> tuple[Subscriber, list[Event], bool]:
        """Register a subscriber; returns it, the history to replay first (events after ``since``) and whether
        events the client asked for are gone (``gap``). Atomic: no event can fall between replay and live.
        ``deliver``: see :class:`Subscriber`."""
        sub = Subscriber(frozenset(types), results, final_only, deliver)
        replay: list[Event] = []
        gap = False
        if since is not None:
            if since > self.seq or since + 1 < self.oldest:
                gap = True
            if since < self.seq:
                replay = [e for e in self.history if e.seq > since and sub.takes(e)]
        self.subscribers.append(sub)
        self.recording = True
        metrics.EVENT_SUBSCRIBERS.set(len(self.subscribers))
        return sub, replay, gap

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
            metrics.EVENT_SUBSCRIBERS.set(len(self.subscribers))
        if not self.subscribers:
            self._last_left = time.monotonic()
        sub.send.close()
        sub.receive.close()

    def wants(self, type_: str) -> bool:
        """Whether any subscriber takes ``type_`` now (lets periodic producers skip work nobody reads)."""
        return any(type_ in s.types for s in self.subscribers)
