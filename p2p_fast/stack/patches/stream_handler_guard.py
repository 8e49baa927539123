"""No stream can stop the node: every stream handler runs inside a guard (a per-instance patch:
:func:`guard_stream_handlers` takes the host and returns its undo).

Upstream: ``libp2p/network/swarm.py`` / ``libp2p/host/basic_host.py`` (py-libp2p 0.8.1) run a protocol's stream
handler in the connection's task group and let an exception from it propagate: the swarm service fails and the
whole node stops (related upstream reports: py-libp2p issues #417 and #1120, the latter fixed for pubsub writes
only). One malformed GossipSub RPC (a protobuf ``DecodeError`` escapes
``Pubsub.continuously_read_stream``) or one task request with a NaN timeout was enough to kill a node from any peer
of the network. :func:`guard_stream_handlers` wraps each handler registered on the host, before or after, so that
an exception ends only that stream: it is reset, counted in ``p2p_messages_rejected_total{topic=<protocol>,
reason="handler-error"}`` and logged. Cancellation (a ``BaseException``) passes through untouched.

The multiselect muxer has no hook around handlers, so the patch rewrites the host muxer's ``handlers`` and wraps
its ``add_handler`` on this one host; the undo puts the original handlers back and removes the wrapper.
Shown by ``tests/stack/patches/test_stream_handler_guard.py``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from p2p_fast.core import metrics

log = logging.getLogger(__name__)
Handler = Callable[[Any], Awaitable[None]]


LOG_EVERY_S = 10.0
_last_logged: dict[tuple[str, str], float] = {}


def _should_log(protocol: str, peer: str) -> bool:
    """One warning per protocol and peer every LOG_EVERY_S: a peer sending bad streams cannot flood the log."""
    now = time.monotonic()
    key = (protocol, peer)
    if now - _last_logged.get(key, -LOG_EVERY_S) < LOG_EVERY_S:
        return False
    if len(_last_logged) > 4096:
        _last_logged.clear()
    _last_logged[key] = now
    return True


def guard(protocol: str, handler: Handler) -> Handler:
    if getattr(handler, "__p2p_guarded__", False):
        return handler

    async def guarded(stream: Any) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            metrics.MESSAGES_REJECTED.labels(str(protocol), "handler-error").inc()
            peer = getattr(getattr(stream, "muxed_conn", None), "peer_id", "?")
            if _should_log(str(protocol), str(peer)):
                log.warning("%s stream from %s failed (%s: %s); stream reset, node unaffected", protocol, peer,
                            type(exc).__name__, str(exc)[:200])
            log.debug("stream handler failure", exc_info=True)
            try:
                await stream.reset()
            except Exception:
                pass

    guarded.__p2p_guarded__ = True  # type: ignore[attr-defined]
    guarded.__wrapped__ = handler  # type: ignore[attr-defined]
    return guarded


def guard_stream_handlers(host: Any) -> Callable[[], None]:
    """Guard the handlers ``host`` has, and every one registered on it later (idempotent). Returns the undo."""
    mux = host.get_mux()
    for protocol, handler in list(mux.handlers.items()):
        if handler is not None:
            mux.handlers[protocol] = guard(protocol, handler)
    if not getattr(mux, "__p2p_guarded__", False):
        add = mux.add_handler

        def add_handler(protocol: Any, handler: Any) -> None:
            add(protocol, guard(protocol, handler) if handler is not None else handler)

        mux.add_handler = add_handler
        mux.__p2p_guarded__ = True
    return lambda: unguard_stream_handlers(host)


def unguard_stream_handlers(host: Any) -> None:
    """Undo :func:`guard_stream_handlers`: the host's handlers and ``add_handler`` are py-libp2p's again."""
    mux = host.get_mux()
    for protocol, handler in list(mux.handlers.items()):
        if getattr(handler, "__p2p_guarded__", False):
            mux.handlers[protocol] = handler.__wrapped__
    if mux.__dict__.get("__p2p_guarded__", False):
        mux.__dict__.pop("add_handler", None)
        del mux.__p2p_guarded__
