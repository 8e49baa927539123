"""``GET /v1/events``: the node's event bus (``p2p_fast.core.events``) as Server-Sent Events.

The first frame is always ``event: hello`` (stream id, current seq, oldest seq in history, ``gap``); then the history
after ``Last-Event-ID`` / ``since`` when asked, then live events, with a ``: keepalive`` comment every
``KEEPALIVE_S``. The response is a plain ASGI callable rather than Starlette's ``StreamingResponse`` because the
stream must end itself when the bus drops it (overflow) and when the client goes away, and must never make the bus
wait: the bus hands events over with ``send_nowait`` and this handler writes them, several per socket write.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import trio
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from p2p_fast.core.events import OVERFLOW_GRACE, TYPES, EventBus, Subscriber
from p2p_fast.app.api.sockets import shutdown_connection

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
MAX_BATCH = 256  # events per socket write


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _parse_types(text: str | None) -> frozenset[str] | str:
    if text is None or not text.strip():
        return frozenset(TYPES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TYPES]
    if unknown:
        return f"unknown event type(s) {', '.join(map(repr, unknown))}; known: {', '.join(TYPES)}"
    return frozenset(names)


def _parse_since(header: str | None, query: str | None) -> int | None | str:
    raw = header if header not in (None, "") else query
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        return f"{'Last-Event-ID' if header not in (None, '') else 'since'} must be an event id (an integer), " \
               f"got {raw[:40]!r}"
    if value < 0:
        return "since must be >= 0"
    return value


class EventStream(Response):
    """The ASGI response of one subscriber (a ``Response`` so FastAPI hands it over untouched)."""

    media_type = "text/event-stream"

    def __init__(self, bus: EventBus, peer_id: str, types: frozenset[str], since: int | None, results: bool,
                 final_only: bool = False) -> None:
        super().__init__()
        self.final_only = final_only
        self.bus = bus
        self.peer_id = peer_id
        self.types = types
        self.since = since
        self.results = results

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        bus = self.bus
        sub, replay, gap = bus.subscribe(self.types, self.since, self.results, self.final_only)
        hello = {"stream": bus.stream, "seq": bus.seq, "peer_id": self.peer_id, "oldest": bus.oldest, "gap": gap,
                 "types": sorted(self.types)}
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                    (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no"),
                                    # The stream owns its connection: when it ends (overflow), so does the connection.
                                    (b"connection", b"close")]})
            first = f"event: hello\ndata: {json.dumps(hello, separators=(',', ':'))}\n\n".encode()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_disconnect, receive, nursery.cancel_scope)
                nursery.start_soon(self._hang_up_when_dropped, sub, scope, nursery.cancel_scope)
                await self._pump(sub, first, replay, send)
                nursery.cancel_scope.cancel()
            with trio.move_on_after(1):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            bus.unsubscribe(sub)

    @staticmethod
    async def _watch_disconnect(receive: Any, scope: trio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return

    @staticmethod
    async def _hang_up_when_dropped(sub: Subscriber, scope: Any, cancel: trio.CancelScope) -> None:
        """After an overflow the client gets ``OVERFLOW_GRACE`` seconds to read the notice; then the connection is
        shut down. Cancelling is not enough: hypercorn shields its socket writes, so a write to a client that
        never reads again would wait for ever (holding the handler and the connection)."""
        await sub.dropped.wait()
        await trio.sleep(OVERFLOW_GRACE)
        cancel.cancel()
        if not shutdown_connection(scope.get("client"), scope.get("server")):
            log.warning("could not shut down the connection of a dropped event subscriber %s", scope.get("client"))

    async def _pump(self, sub: Subscriber, first: bytes, replay: list[Any], send: Any) -> None:
        results = self.results
        await send({"type": "http.response.body", "body": first, "more_body": True})
        for i in range(0, len(replay), MAX_BATCH):
            body = b"".join(e.encode(results) for e in replay[i:i + MAX_BATCH])
            await send({"type": "http.response.body", "body": body, "more_body": True})
        receive = sub.receive
        while True:
            chunks: list[bytes] = []
            with trio.move_on_after(KEEPALIVE_S):
                try:
                    ev = await receive.receive()
                except trio.EndOfChannel:
                    break
                chunks.append(ev.encode(results))
            if not chunks:
                await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                continue
            while len(chunks) < MAX_BATCH:
                try:
                    chunks.append(receive.receive_nowait().encode(results))
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if sub.overflowed:
                # Dropped by the bus: what was buffered is stale anyway; say so (if the client reads in time) and end.
                break
            await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
        if sub.overflowed:
            note = {"reason": "subscriber fell behind the event buffer", "seq": self.bus.seq,
                    "resume": "reconnect with Last-Event-ID; on gap, resync by lookup"}
            await send({"type": "http.response.body", "more_body": True,
                        "body": f"event: overflow\ndata: {json.dumps(note)}\n\n".encode()})


def install_event_routes(app: Any, bus: EventBus | None, own_id: Callable[[], str]) -> None:
    """``GET /v1/events`` streaming ``bus`` (503 without one); ``own_id`` names the node in the stream id."""

    @app.get("/v1/events", summary="Server-Sent Events: task transitions, peers, gossip, stats (see docs/events.md)",
             response_class=JSONResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "an endless SSE stream"},
                        400: {"description": "unknown event type or bad since/Last-Event-ID"}})
    async def events(request: Request, types: str | None = None, since: str | None = None,
                     results: int = 0, final: int = 0) -> Any:
        parsed = _parse_types(types)
        if isinstance(parsed, str):
            return _error(400, "bad types", parsed)
        start = _parse_since(request.headers.get("last-event-id"), since)
        if isinstance(start, str):
            return _error(400, "bad since", start)
        if results not in (0, 1):
            return _error(400, "bad results", "results must be 0 or 1")
        if final not in (0, 1):
            return _error(400, "bad final", "final must be 0 or 1")
        if bus is None:
            return _error(503, "no event bus", "this node has no event bus")
        return EventStream(bus, own_id(), parsed, start, bool(results), bool(final))
