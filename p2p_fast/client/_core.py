"""The client's engine: a submit queue drained by one sender thread, and one completion thread.

``submit`` only encodes the task, checks its size and appends it to a deque (a few µs): the sender thread takes
everything queued, splits it into batches that fit ``http.max_body_bytes`` and the node's batch limit, and sends
them: as ``submit`` frames on the node's task lane when it offers one (``_lane``: no HTTP request per batch), else
(and while the lane is down) as ``POST /v1/tasks/batch``. While one batch is on the wire the next one fills up, so
a burst costs few batches and a lone task goes out at once. Lone indeed: when the sender is idle on an open connection and nothing is queued,
``submit`` writes the request itself (one ``send``, ~20 µs): waking the sender thread first would cost every
sequential round trip a thread switch before the task left. On the lane nobody waits for that answer (the lane's
reader maps the id, or fails the future); over HTTP the sender thread reads it. The completion thread resolves
futures as the node finishes tasks (see ``_completion``). Futures are plain ``concurrent.futures.Future`` objects,
resolved exactly once.
"""

from __future__ import annotations

import base64
import collections
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from p2p_fast.protocols.tasks.functions import FUNCTION_TYPE, decode_result, encode, pickle_function
from p2p_fast.client._http import Http, NodeError, Sent
from p2p_fast.client._lane import LaneTicket

log = logging.getLogger(__name__)
OPTION_KEYS = ("timeout_s", "max_retries", "reward")
JSON_OVERHEAD = 160  # bytes of JSON around one task's payload in a batch, with room for options
BATCH_ENVELOPE = 64
BATCH_PATH = "/v1/tasks/batch"
FINAL = ("completed", "failed", "cancelled")
EARLY_KEEP = 50_000
DIRECT_MAX = 64 * 1024  # a task this small is written by the caller when the sender is idle (fits a socket buffer)
IDLE, CALLER, SENDER = "idle", "caller", "sender"  # who has the sender's connection
AWAITING = "awaiting"  # a caller's batch is on the lane; its answer (read by the lane's reader) gives it back


class TaskFailed(Exception):
    """A task ended without a result. ``error`` is the node's reason (for a function: the exception and its
    traceback); ``attempts`` every attempt with its worker, outcome and reason."""

    def __init__(self, task_id: str, state: str, error: str, attempts: list[dict[str, Any]]) -> None:
        lines = [f"task {task_id} {state}: {error}"]
        for a in attempts:
            reason = a.get("reason") or ""
            if a.get("outcome") != "ok" and reason not in error:
                lines.append(f"  attempt {a.get('n')} on {a.get('worker')}: {a.get('outcome')} ({reason})")
        super().__init__("\n".join(lines))
        self.task_id = task_id
        self.state = state
        self.error = error
        self.attempts = attempts


class PayloadTooLarge(ValueError):
    """A task's payload is over the node's ``tasks.max_payload_bytes``: refused before anything is sent."""


@dataclass
class Limits:
    max_body_bytes: int = 1024 * 1024
    max_payload_bytes: int = 1024 * 1024
    max_batch: int = 10000
    task_lane_port: int | None = None  # where the node's task lane listens (None: it has none)

    @classmethod
    def from_node(cls, http: Http) -> "Limits":
        try:
            doc = http.request("GET", "/v1/tasks/limits", idempotent=True)
        except NodeError as exc:
            if exc.status != 404:
                raise
            return cls()  # an older node: its defaults
        lane = doc.get("task_lane_port")
        return cls(int(doc["max_body_bytes"]), int(doc["max_payload_bytes"]), int(doc["max_batch"]),
                   int(lane) if lane else None)


class HttpPoster:
    """Batches as ``POST /v1/tasks/batch`` on one keep-alive connection (used by one thread at a time)."""

    def __init__(self, http: Http) -> None:
        self.http = http

    @property
    def ready(self) -> bool:
        """A batch posted now needs no connect first."""
        return self.http.connected

    def post(self, batch: list[Pending]) -> Any:
        """Write a batch (never raises: a failed write is kept for :meth:`answer`); returns what ``answer`` takes."""
        return self.http.send("POST", BATCH_PATH, {"tasks": [p.spec for p in batch]})

    def answer(self, sent: Any) -> list[str] | None:
        """The node's ids for the batch ``sent`` (None: given to ``accept`` already); :class:`NodeError` when the
        node refused it or is gone."""
        return self.http.receive(sent)["ids"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.http.close()


class LanePoster(HttpPoster):
    """Batches as ``submit`` frames on the task lane while it is open (``completion.lane``), over HTTP otherwise."""

    def __init__(self, http: Http, completion: Any, timeout: float,
                 accept: Callable[[list[Pending], list[str]], None]) -> None:
        super().__init__(http)
        self.completion = completion
        self.timeout = timeout
        self.accept = accept  # the engine's: match a batch's futures to its ids (the lane's reader calls it)
        self.on_lane = 0  # batches sent on the lane

    @property
    def ready(self) -> bool:
        return self.completion.lane is not None or self.http.connected

    def post(self, batch: list[Pending]) -> Any:
        lane = self.completion.lane
        if lane is not None and not lane.closed:
            self.on_lane += 1
            return lane.submit([p.spec for p in batch], lambda ids: self.accept(batch, ids))
        return super().post(batch)

    def post_unwatched(self, batch: list[Pending], on_ids: Callable[[list[str]], None],
                       on_error: Callable[[NodeError], None]) -> LaneTicket | None:
        """Write a batch on the lane when it is open, for nobody to wait on: the lane's reader calls ``on_ids`` or
        ``on_error`` with its answer. None: the lane is down, post it the usual way."""
        lane = self.completion.lane
        if lane is None or lane.closed:
            return None
        self.on_lane += 1
        return lane.submit([p.spec for p in batch], on_ids, on_error)

    def answer(self, sent: Any) -> list[str] | None:
        if isinstance(sent, LaneTicket):
            sent.wait(self.timeout)  # raises what went wrong; the reader gave the ids to accept
            return None
        return super().answer(sent)


def fail_batch(batch: list[Pending], exc: Exception) -> None:
    """The node refused ``batch`` (all or none) or could not be reached: its futures fail with why."""
    err = exc if isinstance(exc, NodeError) else NodeError(f"submitting failed: {exc}")
    for p in batch:
        if not p.future.done():
            p.future.set_exception(err)


@dataclass
class Pending:
    future: Future[Any]
    spec: dict[str, Any]
    size: int
    function: bool
    task_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    """Shared by :class:`~p2p_fast.client.Client` and :class:`~p2p_fast.client.AsyncClient`."""

    def __init__(self, api: str, token: str | None, timeout: float, events: bool = True, lane: bool = True) -> None:
        self.api = api
        self.token = token
        self.timeout = timeout
        http = Http(api, token, timeout)  # the sender's connection, once the limits are read
        try:
            self.limits = Limits.from_node(http)
        except BaseException:
            http.close()
            raise
        self.queue: collections.deque[Pending] = collections.deque()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.by_id: dict[str, Pending] = {}
        # Final events of tasks whose submission has not been answered yet (or of other clients' tasks: bounded).
        self.early: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.closed = False
        self._fn_cache: dict[int, tuple[Callable[..., Any], bytes]] = {}
        self.sent = 0
        self.batches = 0
        self.direct = 0  # submissions written by the caller's thread
        self.conn_owner = SENDER  # who writes batches now (see the module doc)
        self._direct: tuple[list[Pending], Any] | None = None
        self._answered_early = False  # the lane's answer to a caller's batch came before the caller let go
        from p2p_fast.client._completion import Completion

        # Not behind https: the lane is plain TCP, and the token travels on it.
        lane_port = self.limits.task_lane_port if lane and not http.https else None
        self.completion = Completion(self, events, lane_port)
        self.poster = HttpPoster(http) if self.completion.lane_port is None else \
            LanePoster(http, self.completion, timeout, self.accept)
        self.sender = threading.Thread(target=self._send_loop, name="p2p-client-submit", daemon=True)
        self.sender.start()
        self.completion.start()  # returns once the event stream is up (or known to be unavailable)

    # -- submit (caller's thread) ------------------------------------------------------------------------------------
    def _fn_blob(self, fn: Callable[..., Any]) -> bytes:
        hit = self._fn_cache.get(id(fn))
        if hit is not None and hit[0] is fn:
            return hit[1]
        blob = pickle_function(fn)
        if len(self._fn_cache) >= 256:
            self._fn_cache.clear()
        self._fn_cache[id(fn)] = (fn, blob)
        return blob

    def make(self, task: str | Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             options: dict[str, Any] | None, packages: list[dict[str, str]] | None) -> Pending:
        if callable(task):
            payload = encode(self._fn_blob(task), args, kwargs, packages)
            spec: dict[str, Any] = {"type": FUNCTION_TYPE}
            function = True
        elif isinstance(task, str):
            if kwargs or len(args) > 1:
                raise TypeError(f"a {task!r} task takes one payload (str or bytes), got {len(args)} positional "
                                f"and {len(kwargs)} keyword arguments")
            payload = args[0] if args else b""
            if isinstance(payload, str):
                payload = payload.encode()
            elif not isinstance(payload, (bytes, bytearray, memoryview)):
                raise TypeError(f"the payload of a {task!r} task must be str or bytes, not {type(payload).__name__}")
            spec = {"type": task}
            function = False
        else:
            raise TypeError(f"task must be a registered type name or a callable, not {type(task).__name__}")
        if len(payload) > self.limits.max_payload_bytes:
            raise PayloadTooLarge(f"payload of {len(payload)} bytes is over the node's tasks.max_payload_bytes "
                                  f"({self.limits.max_payload_bytes}); nothing was sent")
        text = base64.b64encode(payload).decode("ascii")
        spec["payload"] = text
        spec["payload_encoding"] = "base64"
        if options:
            spec.update(options)
        size = len(text) + JSON_OVERHEAD + (sum(len(str(k)) + len(str(v)) + 6 for k, v in options.items())
                                            if options else 0)
        if size + BATCH_ENVELOPE > self.limits.max_body_bytes:
            raise PayloadTooLarge(f"task of {size} bytes as JSON does not fit the node's http.max_body_bytes "
                                  f"({self.limits.max_body_bytes}); nothing was sent")
        return Pending(Future(), spec, size, function)

    def enqueue(self, p: Pending) -> None:
        if self.closed:
            raise RuntimeError("the client is closed")
        if self.conn_owner == IDLE and not self.queue and p.size <= DIRECT_MAX and self.poster.ready:
            with self.lock:
                mine = self.conn_owner == IDLE and not self.queue
                if mine:
                    self.conn_owner = CALLER
            if mine:
                self._write_alone(p)
                self.direct += 1
                return
        self.queue.append(p)
        if not self.wake.is_set():
            self.wake.set()

    def _write_alone(self, p: Pending) -> None:
        """Write ``p`` from the caller's thread (it owns the connection). On the lane nobody waits for the answer
        (its reader maps the id), so the sender thread is not woken: a round trip then costs the client no thread
        switch but the reader's and the caller's. Over HTTP the sender reads the answer."""
        ticket: LaneTicket | None = None
        sent: Any = Sent("POST", BATCH_PATH, None, {}, None, error=RuntimeError("interrupted while writing"))
        try:
            if isinstance(self.poster, LanePoster):
                ticket = self.poster.post_unwatched([p], lambda ids: self._accept_unwatched([p], ids),
                                                    lambda err: self._fail_unwatched([p], err))
            if ticket is None:
                sent = self.poster.post([p])
        finally:  # whatever happened, the connection goes back, and the answer (or error) to whoever reads it
            with self.lock:
                if ticket is None:
                    self._direct = ([p], sent)
                    self.conn_owner = SENDER
                    wake = True
                elif self._answered_early:
                    self._answered_early = False
                    wake = self._give_back()
                else:
                    self.conn_owner = AWAITING
                    wake = False
            if wake:
                self.wake.set()

    def _accept_unwatched(self, batch: list[Pending], ids: list[str]) -> None:
        self.accept(batch, ids)
        self._lane_answered()

    def _fail_unwatched(self, batch: list[Pending], exc: Exception) -> None:
        fail_batch(batch, exc)
        self._lane_answered()

    def _lane_answered(self) -> None:
        """The lane's reader has the answer to a caller's batch: the connection is free again (while that batch
        is on the wire, later submissions queue up for the sender, so a burst still goes in batches)."""
        with self.lock:
            if self.conn_owner != AWAITING:  # the caller has not let go yet: it gives the connection back
                self._answered_early = True
                return
            wake = self._give_back()
        if wake:
            self.wake.set()

    def _give_back(self) -> bool:
        """(Under ``lock``.) The connection goes to the sender when something is queued (True: wake it)."""
        self.conn_owner = SENDER if self.queue else IDLE
        return self.conn_owner == SENDER or self.closed

    # -- sender thread -----------------------------------------------------------------------------------------------
    def _take_batch(self) -> list[Pending]:
        batch: list[Pending] = []
        budget = self.limits.max_body_bytes - BATCH_ENVELOPE
        while self.queue and len(batch) < self.limits.max_batch:
            p = self.queue[0]
            if batch and p.size > budget:
                break
            self.queue.popleft()
            if p.future.cancelled():
                continue
            budget -= p.size
            batch.append(p)
        return batch

    def _send_loop(self) -> None:
        poster = self.poster
        try:
            while True:
                with self.lock:
                    direct, self._direct = self._direct, None
                    if direct is None and self.conn_owner not in (CALLER, AWAITING):
                        self.conn_owner = SENDER if self.queue else IDLE
                    owner = self.conn_owner
                if direct is not None:
                    self._answered(poster, *direct)
                    continue
                if owner != SENDER:  # idle, or a caller's request is out (we are woken when it is answered)
                    if owner == IDLE and self.closed:
                        return
                    self.wake.wait()
                    self.wake.clear()
                    continue
                batch = self._take_batch()
                if batch:
                    self._answered(poster, batch, poster.post(batch))
        finally:
            with self.lock:
                self.conn_owner = SENDER  # nobody writes on it any more
            poster.close()

    def _answered(self, poster: HttpPoster, batch: list[Pending], sent: Any) -> None:
        """Read the node's answer to the batch ``sent``; map the ids or fail the futures."""
        try:
            ids = poster.answer(sent)
        except Exception as exc:  # the node refused the batch (all or none) or is unreachable
            fail_batch(batch, exc)
            return
        if ids is not None:
            self.accept(batch, ids)

    def accept(self, batch: list[Pending], ids: list[str]) -> None:
        """The node took ``batch`` as ``ids``: match the futures (and the events that came first) to them."""
        self.batches += 1
        self.sent += len(ids)
        early = []
        with self.lock:
            for p, task_id in zip(batch, ids):
                p.task_id = task_id
                p.future.task_id = task_id  # type: ignore[attr-defined]  # for the user (logs, p2p-ctl)
                doc = self.early.pop(task_id, None)
                if doc is None:
                    self.by_id[task_id] = p
                else:
                    early.append((p, doc))
        for p, doc in early:
            self._resolve(p, doc)
        for p in batch:
            if p.future.cancelled() and p.task_id:  # cancelled while its batch was on the wire
                self.completion.cancel(p.task_id)
        self.completion.added(ids)

    # -- completion (called by the completion source) ----------------------------------------------------------------
    def finish(self, doc: dict[str, Any], stash: bool = False) -> None:
        """Resolve the future of a task in a final state (``doc``: the node's task record); once only. ``stash``: the
        event may come before the batch that submitted the task has its answer; keep it for that moment."""
        with self.lock:
            p = self.by_id.pop(doc["id"], None)
            if p is None and stash:
                self.early[doc["id"]] = doc
                while len(self.early) > EARLY_KEEP:
                    self.early.popitem(last=False)
        if p is not None:
            self._resolve(p, doc)

    def _resolve(self, p: Pending, doc: dict[str, Any]) -> None:
        if p.future.done():
            return
        if doc["state"] == "completed":
            try:
                value = self._result(doc, p.function)
            except Exception as exc:
                p.future.set_exception(exc)
                return
            p.future.set_result(value)
        else:
            p.future.set_exception(TaskFailed(doc["id"], doc["state"], doc.get("error") or doc["state"],
                                              doc.get("attempts") or []))

    @staticmethod
    def _result(doc: dict[str, Any], function: bool) -> Any:
        raw = doc.get("result") or ""
        data = base64.b64decode(raw) if doc.get("result_encoding") == "base64" else raw.encode()
        return decode_result(data) if function else data

    def pending_ids(self) -> list[str]:
        with self.lock:
            return list(self.by_id)

    def close(self) -> None:
        self.closed = True
        self.wake.set()
        self.sender.join(timeout=self.timeout)
        self.completion.stop()
