"""The task lane: one long-lived TCP connection per client for submissions and completions (``p2p_fast.client``).

Why: over HTTP every lone task cost the client's node an HTTP request (hypercorn, h11 and trio's scheduler: ~380 µs
of CPU, the request read ~0.4 ms after the client began to send it) and its completion a Server-Sent Event (another
~0.4 ms from the node's bus to the client's reader); bench/RESULTS.md "Client round trip". Here a submission is one
frame read straight off a trio socket, and a completion one frame written to it. A WebSocket on the HTTP port was
the other choice; hypercorn runs every WebSocket message through the same per-event machinery (its stream state
machine, the ASGI queue, one task switch each way) that a request pays, which is what the lane exists to skip.

The wire: frames of a 4-byte big-endian length and that many bytes of one JSON object with an ``op``.

* client -> node, first: ``{"op": "hello", "token": <the API token or null>, "since": <last event seq or null>}``;
  node -> client: ``{"op": "hello", "stream", "seq", "oldest", "gap", "peer_id", "max_frame"}`` (the event stream's
  hello, ``docs/events.md``: a new ``stream`` after a restart, ``gap`` when events after ``since`` are gone).
  A wrong or missing token (when the node has one) is ``{"op": "error", "error": "unauthorized"}`` and the end.
* client -> node: ``{"op": "submit", "tasks": [...]}``, the body of ``POST /v1/tasks/batch`` with the same checks
  (``api.fast_submit``, and the ``TaskBatch`` model for a batch in doubt), limits and scheduling entry point
  (``submit_many``). Answered in order: ``{"op": "submitted", "ids": [...]}`` (held back up to ``ANSWER_DELAY_S``
  to share a write with the next event, see ``TaskLane._submissions``) or ``{"op": "refused", "status", "error",
  "detail"}`` with the HTTP route's status and JSON; a refusal leaves the lane open.
* node -> client: ``{"op": "event", "type": "task", "seq", "data"}`` for each final task event with its result
  inline (what ``GET /v1/events?types=task&results=1&final=1`` sends), after the history since ``since``;
  ``{"op": "ping"}`` after ``KEEPALIVE_S`` of silence. Events are written from inside the bus's ``emit``
  (``lane_writer``); a client that leaves ``WRITE_LIMIT`` bytes unread loses its lane (it reconnects with
  ``since``, and on a gap looks its tasks up).
* A frame that is not one JSON object with a known ``op``, is larger than ``http.max_body_bytes`` plus
  ``ENVELOPE`` (``HELLO_MAX`` before the hello), or a hello that does not come within ``HELLO_TIMEOUT_S``: ``{"op":
  "error", "error": "bad frame", "detail": <why>}`` and that lane closes; the node and its other lanes go on.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from typing import Any, Callable

import trio

from p2p_fast.app.api.fast_submit import CODE_NEEDS_TOKEN, plain_batch, submit_specs
from p2p_fast.app.api.lane_writer import LaneOverflow, LaneWriter
from p2p_fast.core.events import EventBus
from p2p_fast.protocols.tasks.functions import FUNCTION_TYPE

log = logging.getLogger(__name__)
_LEN = struct.Struct(">I")
HELLO_MAX = 4096  # bytes a frame may have before the client said who it is
HELLO_TIMEOUT_S = 10.0
ENVELOPE = 256  # a submit frame's bytes beyond the batch body http.max_body_bytes limits
KEEPALIVE_S = 15.0
REPLAY_CHUNK = 1024 * 1024  # bytes of replayed history per write
WRITE_LIMIT = 8 * 1024 * 1024  # bytes a client may leave unread before its lane ends (it resumes with since)
ANSWER_DELAY_S = 0.005  # how long an accepted batch's answer may wait for an event to ride with (see _submissions)
READ_SIZE = 65536
OPS = ("hello", "submit")


class BadFrame(Exception):
    """What the client sent cannot be read as a lane frame: told to it, then its lane closes."""


def frame(doc: Any) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


def _raw_frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


PING = frame({"op": "ping"})


class FrameReader:
    """Frames off a trio stream; ``BadFrame`` for one over ``limit`` or not a JSON object with a known ``op``."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def next(self, limit: int) -> dict[str, Any] | None:
        """The next frame, or None when the client closed the connection between frames."""
        while len(self.buf) < 4:
            if not await self._more():
                if self.buf:
                    raise BadFrame("the connection ended inside a frame's length")
                return None
        n = _LEN.unpack_from(self.buf)[0]
        if n > limit:
            raise BadFrame(f"a frame of {n} bytes is over this lane's limit of {limit} bytes"
                           + (" before the hello" if limit == HELLO_MAX else " (http.max_body_bytes plus the envelope)"))
        while len(self.buf) < 4 + n:
            if not await self._more():
                raise BadFrame(f"the connection ended inside a frame ({len(self.buf) - 4} of {n} bytes)")
        body = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadFrame(f"a frame is not JSON: {exc}") from None
        if type(doc) is not dict or doc.get("op") not in OPS:
            op = doc.get("op") if type(doc) is dict else None
            raise BadFrame(f"a frame must be a JSON object with an op of {', '.join(OPS)}; got "
                           + (f"op {op!r}" if type(doc) is dict else type(doc).__name__))
        return doc

    async def _more(self) -> bool:
        chunk = await self.stream.receive_some(READ_SIZE)
        self.buf += chunk
        return bool(chunk)


class TaskLane:
    """The lane's listener. ``service()``: the node's task service now (None: it runs none); ``bus``: its event
    bus; ``token``: the API token or None; ``max_body``: ``http.max_body_bytes``; ``own_id()``: the peer id."""

    def __init__(self, service: Callable[[], Any], bus: EventBus, token: str | None, max_body: int,
                 own_id: Callable[[], str]) -> None:
        self.service = service
        self.bus = bus
        self._token = token.encode() if token is not None else None
        self.max_frame = max_body + ENVELOPE
        self.own_id = own_id
        self.open = 0  # lanes connected now
        self.submitted = 0  # batches accepted
        self.refused = 0  # lanes closed for a bad token or a bad frame

    async def serve(self, sock: socket.socket, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Accept lanes on ``sock`` (bound and listening) until cancelled."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        task_status.started()
        await trio.serve_listeners(self._serve_one, [listener])

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        self.open += 1
        writer = LaneWriter(stream, WRITE_LIMIT + self.max_frame, ANSWER_DELAY_S, KEEPALIVE_S, PING)
        try:
            await self._lane(stream, writer)
        except BadFrame as exc:
            self.refused += 1
            log.info("task lane from %s closed: %s", _peer(stream), exc)
            await _last_word(writer, {"op": "error", "error": "bad frame", "detail": str(exc)})
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        except LaneOverflow as exc:
            log.info("task lane from %s closed: %s", _peer(stream), exc)
        except Exception:  # never let one lane take the listener down
            log.exception("task lane from %s failed", _peer(stream))
        finally:
            self.open -= 1
            await stream.aclose()

    async def _lane(self, stream: trio.SocketStream, writer: LaneWriter) -> None:
        reader = FrameReader(stream)
        hello = None
        with trio.move_on_after(HELLO_TIMEOUT_S):
            hello = await reader.next(HELLO_MAX)
            if hello is None:
                return
        if hello is None:
            raise BadFrame(f"no hello within {HELLO_TIMEOUT_S:g} s")
        if hello["op"] != "hello":
            raise BadFrame(f"the first frame must be the hello, not {hello['op']!r}")
        if not self._authorized(hello.get("token")):
            from p2p_fast.app.api.token import refused

            self.refused += 1
            detail = refused(hello.get("token") is not None, "the API token in the hello's token")
            await _last_word(writer, {"op": "error", "error": "unauthorized", "detail": detail})
            return
        since = hello.get("since")
        if since is not None and (type(since) is not int or since < 0):
            raise BadFrame(f"the hello's since must be an event seq (an integer >= 0) or null, got {since!r}")
        bus = self.bus

        live: list[bytes] | None = []  # events that came while the history was replayed (None: live now)
        held = [0]  # their bytes: bounded like the writer's queue

        def deliver(ev: Any) -> None:  # inside the bus's emit: see lane_writer
            try:
                if live is None:
                    writer.send(_event(ev))
                elif writer.failed is None:
                    data = _event(ev)
                    live.append(data)
                    held[0] += len(data)
                    if held[0] > writer.limit:
                        writer.abort(LaneOverflow(f"{held[0]} bytes of events came during the replay"))
            except Exception:  # never into the dispatcher that emitted it
                log.exception("task lane: an event could not be written")

        sub, replay, gap = bus.subscribe(("task",), since, True, True, deliver)
        bad: BadFrame | None = None
        try:
            writer.send(frame({"op": "hello", "stream": bus.stream, "seq": bus.seq, "oldest": bus.oldest, "gap": gap,
                               "peer_id": self.own_id(), "max_frame": self.max_frame}))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, writer, nursery.cancel_scope)
                await _replay(writer, replay)  # at the client's pace: history can be far more than the limit
                pending, live = live, None
                if pending:
                    writer.send(b"".join(pending))
                try:
                    await self._submissions(reader, writer)
                except BadFrame as exc:
                    bad = exc
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass  # the client went away
                nursery.cancel_scope.cancel()  # the client closed its side (or broke it): nothing more to send it
        finally:
            bus.unsubscribe(sub)
        if bad is not None:
            raise bad
        if writer.failed is not None:
            raise writer.failed

    @staticmethod
    async def _write(writer: LaneWriter, done: trio.CancelScope) -> None:
        try:
            await writer.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LaneOverflow):
            done.cancel()  # _lane raises writer.failed (or returns, for a closed socket)

    def _authorized(self, token: Any) -> bool:
        if self._token is None:
            return True
        if type(token) is not str:
            return False
        from p2p_fast.app.api.token import token_matches

        return token_matches(self._token, token.encode())

    async def _submissions(self, reader: FrameReader, writer: LaneWriter) -> None:
        """Read submit frames and answer each, in order. An accepted batch's answer is held for the next event
        (``ANSWER_DELAY_S`` at most) and goes out in the same write. Why: written at once, it went out while the
        tasks were on their way to a worker (trio runs a scheduler round's tasks in no set order, so before the
        link's write half the time), and its send on loopback woke the client's reader, which took the CPU from the
        node (measured: the task reached its worker ~0.3 ms later). Held, a lone task costs the client one wake-up
        and the node one write. The client needs the ids before the events only to match them (it keeps events
        that come first), and waits for the answer before its next batch: a burst's next batch waits a task's run
        time, or ``ANSWER_DELAY_S``, once per batch. A refusal goes out at once."""
        while True:
            doc = await reader.next(self.max_frame)
            if doc is None:
                return
            if doc["op"] != "submit":
                raise BadFrame(f"a {doc['op']!r} frame after the hello (only submit frames may follow it)")
            status, answer = await self._submit(doc)
            if status == 202:
                self.submitted += 1
                writer.hold(frame({"op": "submitted", "ids": answer["ids"]}))
            else:
                writer.send(frame({"op": "refused", "status": status, **answer}))

    async def _submit(self, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A submit frame as ``POST /v1/tasks/batch``: the status and JSON the route would answer."""
        service = self.service()
        if service is None:
            return 503, {"error": "this node runs no task service"}
        batch = {k: v for k, v in doc.items() if k != "op"}
        tasks = plain_batch(batch)
        types: set[str]
        if tasks is not None:
            types = {t[0] for t in tasks}
            checked: list[Any] = tasks
        else:  # in doubt: the full model decides, and names the field it refuses
            from p2p_fast.app.api.tasks import model_batch
            from p2p_fast.protocols.tasks.spec import TaskSpecError

            try:
                made = model_batch(batch)
            except TaskSpecError as exc:
                return exc.status, {"error": str(exc)}
            if isinstance(made, list):
                return 422, {"error": "invalid request", "detail": made}
            checked, types = made
        if FUNCTION_TYPE in types and self._token is None:
            return 403, {"error": CODE_NEEDS_TOKEN}
        return await submit_specs(service, checked)


async def _replay(writer: LaneWriter, events: list[Any]) -> None:
    """Write ``events`` (the history after the hello's ``since``) in chunks of about ``REPLAY_CHUNK`` bytes, each
    once the client has read all but ``REPLAY_CHUNK`` of what came before."""
    chunk: list[bytes] = []
    size = 0
    for ev in events:
        data = _event(ev)
        chunk.append(data)
        size += len(data)
        if size >= REPLAY_CHUNK:
            writer.send(b"".join(chunk))
            chunk, size = [], 0
            await writer.wait_below(REPLAY_CHUNK)
    writer.send(b"".join(chunk))


def _event(ev: Any) -> bytes:
    return _raw_frame(b'{"op":"event","type":"%s","seq":%d,"data":%s}' % (ev.type.encode(), ev.seq,
                                                                         ev.json(True).encode()))


async def _last_word(writer: LaneWriter, doc: dict[str, Any]) -> None:
    """Tell the client why its lane ends, if it reads within a second."""
    writer.send(frame(doc))
    try:
        await writer.flush(1.0)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


def _peer(stream: trio.SocketStream) -> str:
    try:
        return "%s:%s" % stream.socket.getpeername()[:2]
    except OSError:
        return "a client"
