"""The client's end of the node's task lane (``p2p_fast/app/api/lane.py`` has the wire format).

One TCP connection carries the client's submissions (a ``submit`` frame per batch, answered in order) and the
node's final task events (what ``GET /v1/events`` would push). Writes come from the caller's or the sender thread
(serialised by a lock, one ``sendall`` a frame); one reader thread (``Completion``) reads every frame, hands each
answer to the submission waiting for it (:class:`LaneTicket`) and each event to the completion logic. When the
connection breaks, every submission still waiting fails with :class:`LaneDown`: whether the node took it is not
known, and sending it again could run it twice.
"""

from __future__ import annotations

import collections
import json
import socket
import struct
import threading
from typing import Any, Callable

from p2p_fast.client._http import NodeError

_LEN = struct.Struct(">I")
READ_SIZE = 65536
SILENCE_S = 45.0  # the node pings every 15 s; three pings missed: the connection is dead
MAX_FRAME = 256 * 1024 * 1024  # larger is not a frame of ours
CONNECT_TIMEOUT_S = 5.0


class LaneDown(NodeError):
    """The lane closed (or was never open) before the node answered this submission."""


class LaneTicket:
    """A submission written on the lane; :meth:`wait` gives the node's answer (``{"ids": [...]}``)."""

    __slots__ = ("_done", "doc", "error", "on_error", "on_ids")

    def __init__(self, on_ids: Callable[[list[str]], None] | None = None,
                 on_error: Callable[[NodeError], None] | None = None) -> None:
        self._done = threading.Event()
        self.doc: dict[str, Any] | None = None
        self.error: NodeError | None = None
        # Called by the reader with the ids before it reads on: the events that came in the same write as the
        # answer find their futures at once (no hop to the thread that waits for the ticket).
        self.on_ids = on_ids
        # Called with the error when the batch fails: a ticket nobody waits for still fails its futures.
        self.on_error = on_error

    def settle(self, doc: dict[str, Any] | None, error: NodeError | None = None) -> None:
        if doc is not None and self.on_ids is not None:
            try:
                self.on_ids(doc["ids"])
            except Exception as exc:  # an answer we cannot use: the waiting thread reports it
                doc, error = None, NodeError(f"the node's answer on the task lane: {type(exc).__name__}: {exc}")
        self.doc, self.error = doc, error
        self._done.set()
        if error is not None and self.on_error is not None:
            self.on_error(error)

    def wait(self, timeout: float) -> dict[str, Any]:
        if not self._done.wait(timeout):
            raise NodeError(f"the node did not answer a submission on the task lane within {timeout:g} s")
        if self.error is not None:
            raise self.error
        assert self.doc is not None
        return self.doc


def _frame(doc: Any) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


class LaneConnection:
    """One open lane. :meth:`open` says hello; then :meth:`submit` (any thread) and :meth:`run` (one reader)."""

    def __init__(self, host: str, port: int, token: str | None, timeout: float) -> None:
        self.where = f"{host}:{port}"
        self.token = token
        self.timeout = timeout
        # A port nobody forwards may drop the connect silently: a short wait, then HTTP (``Completion``).
        self.sock = socket.create_connection((host, port), timeout=min(timeout, CONNECT_TIMEOUT_S))
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.wlock = threading.Lock()
        self.waiting: collections.deque[LaneTicket] = collections.deque()
        self.closed = False
        self.submitted = 0

    def open(self, since: int | None) -> dict[str, Any]:
        """Say hello (the token, the last event seq seen); the node's hello (``stream``, ``seq``, ``gap``...).
        :class:`NodeError` with status 401 when the node refuses the token."""
        self.sock.sendall(_frame({"op": "hello", "token": self.token, "since": since}))
        hello = self._read()
        if hello.get("op") == "error":
            raise NodeError(f"task lane {self.where}: {hello.get('error')}: {hello.get('detail')}",
                            401 if hello.get("error") == "unauthorized" else 400)
        if hello.get("op") != "hello":
            raise ValueError(f"task lane {self.where}: expected the hello, got {hello.get('op')!r}")
        self.sock.settimeout(SILENCE_S)
        return hello

    def submit(self, specs: list[dict[str, Any]],
               on_ids: Callable[[list[str]], None] | None = None,
               on_error: Callable[[NodeError], None] | None = None) -> LaneTicket:
        """Write one batch; its ticket fails with :class:`LaneDown` when the lane is (or goes) down first.
        ``on_ids``: called by the reader thread with the node's ids, before it reads on; ``on_error`` with the
        error when the batch fails (the node refused it, or the lane went down first)."""
        data = _frame({"op": "submit", "tasks": specs})
        ticket = LaneTicket(on_ids, on_error)
        failed: list[LaneTicket] = []
        why = ""
        with self.wlock:
            if self.closed:
                failed = [ticket]
                why = f"the task lane {self.where} is closed"
            else:
                self.waiting.append(ticket)
                try:
                    self.sock.sendall(data)
                    self.submitted += 1
                except OSError as exc:
                    why = f"writing to the task lane {self.where} failed: {exc}"
                    failed = self._shut()
        self._settle_down(failed, why)
        return ticket

    def run(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        """Read frames until the lane ends (then raise why): answers settle their tickets, events go to
        ``on_event`` (the event's ``data``, with ``seq``)."""
        try:
            while True:
                doc = self._read()
                op = doc.get("op")
                if op == "event":
                    on_event(doc)
                elif op in ("submitted", "refused"):
                    with self.wlock:
                        ticket = self.waiting.popleft() if self.waiting else None
                    if ticket is None:
                        raise ValueError(f"task lane {self.where}: an answer for no submission")
                    if op == "submitted":
                        ticket.settle(doc)
                    else:
                        detail = doc.get("detail")
                        ticket.settle(None, NodeError(f"submit on the task lane: {doc.get('status')}: "
                                                      f"{doc.get('error')}" + (f" ({detail})" if detail else ""),
                                                      int(doc.get("status") or 0)))
                elif op == "overflow":
                    raise ValueError(f"task lane {self.where}: the node dropped this lane (overflow)")
                elif op == "error":
                    raise ValueError(f"task lane {self.where}: {doc.get('error')}: {doc.get('detail')}")
                # "ping", and ops a newer node may add: nothing to do
        finally:
            self.close()

    def _read(self) -> dict[str, Any]:
        while len(self.buf) < 4:
            self._more()
        n = _LEN.unpack_from(self.buf)[0]
        if n > MAX_FRAME:
            raise ValueError(f"task lane {self.where}: a frame of {n} bytes (not a lane?)")
        while len(self.buf) < 4 + n:
            self._more()
        doc = json.loads(bytes(self.buf[4:4 + n]))
        del self.buf[:4 + n]
        if type(doc) is not dict:
            raise ValueError(f"task lane {self.where}: a frame that is not a JSON object")
        return doc

    def _more(self) -> None:
        chunk = self.sock.recv(READ_SIZE)
        if not chunk:
            raise ConnectionError(f"the task lane {self.where} closed")
        self.buf += chunk

    def _shut(self) -> list[LaneTicket]:
        """Mark the lane closed and wake the reader (under ``wlock``); the submissions still waiting for an answer,
        which the caller fails with :meth:`_settle_down` once it has let go of the lock (their callbacks may
        submit again)."""
        self.closed = True
        waiting, self.waiting = list(self.waiting), collections.deque()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        except OSError:
            pass
        return waiting

    @staticmethod
    def _settle_down(tickets: list[LaneTicket], why: str) -> None:
        for t in tickets:
            t.settle(None, LaneDown(why + " before the node answered (the batch may or may not have been "
                                          "submitted; not sent again, so that nothing runs twice)"))

    def close(self) -> None:
        with self.wlock:
            waiting = [] if self.closed else self._shut()
        self._settle_down(waiting, f"the task lane {self.where} closed")
        self.sock.close()
