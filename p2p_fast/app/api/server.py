"""Serve the ASGI app with hypercorn's trio worker, inside the node's own trio loop.

Why hypercorn + FastAPI: the node runs on trio (py-libp2p does), so the server must too — hypercorn has a native trio
worker, and FastAPI/Starlette run on anyio, which drives trio. Handlers therefore call the node directly, with no
thread hop or second event loop. We bind the socket ourselves and hand hypercorn the file descriptor: that gives a
clear error when the port is taken and tells us the real port when ``:0`` asked for a free one.

A keep-alive connection serves up to ``KEEP_ALIVE_MAX_REQUESTS`` requests (hypercorn's default, 1000, made a client
that submits one task at a time reconnect every 1000 tasks: a TCP handshake in the middle of a round trip).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

log = logging.getLogger(__name__)
KEEP_ALIVE_MAX_REQUESTS = 1_000_000


class HttpListenError(RuntimeError):
    pass


def bind_socket(listen: str, what: str = "HTTP listener",
                hint: str = "set http.listen or --http-listen to a free HOST:PORT; port 0 picks one") -> socket.socket:
    """A listening socket on ``listen`` (HOST:PORT); :class:`HttpListenError` naming ``what`` and, in ``hint``,
    the setting to change when it cannot be bound."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise HttpListenError(f"{what} {listen}: {exc.strerror} ({hint})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def serve_http(app: Any, sock: socket.socket, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    cfg = HyperConfig()
    cfg.bind = [f"fd://{sock.fileno()}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("p2p_fast.http")
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 30
    cfg.keep_alive_max_requests = KEEP_ALIVE_MAX_REQUESTS
    shutdown = trio.Event()
    task_status.started()
    try:
        await serve(app, cfg, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
    finally:
        sock.close()
