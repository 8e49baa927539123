"""The HTTP listener's front: probes, metrics and the lean routes answered at once, the FastAPI app built on the first
other request.

Why: FastAPI, Starlette and pydantic are about a third of a node's start-up CPU and 20-25 MiB of its memory (the
OpenAPI models alone are pydantic classes built at import; bench/RESULTS.md "Start-up CPU and RSS"), and most nodes
never serve anything but ``/healthz``, ``/readyz`` (Kubernetes probes) and ``/metrics`` (Prometheus). Those three
are answered here with the same bodies, status codes and content types as the FastAPI routes in
``p2p_fast.app.api.app`` (which still define them, for the full app's OpenAPI schema and for the remote console); any
other request (but the ``fast`` routes below), a ``/metrics`` scrape that needs the API token, and any non-GET method
go to the full app, which ``build`` creates (importing FastAPI) the first time it is needed. Behaviour is the same,
only paid for when used.

``fast`` routes (method, path -> handler) are answered by their handler, which gets the full app too, for the
requests it leaves to it: ``POST /v1/tasks/batch`` is ``api.fast_submit``, the client's submission path; the node's
JSON reads, its gossip send and the task lookups are ``api.lean_routes``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

_TEXT = b"text/plain; charset=utf-8"


def readyz_answer(node: Any) -> tuple[int, str]:
    """The readiness probe's status and body, for this front and the full app's ``/readyz`` alike."""
    node.update_health_gauges()
    # The remote console's stand-in node has no readiness(); the real one says why it is not ready.
    ready, why = node.readiness() if hasattr(node, "readiness") else (node.ready(), "no peers")
    return (200, "ready\n") if ready else (503, f"not ready: {why}\n")


async def _send(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


class LazyFront:
    """ASGI app: ``/healthz``, ``/readyz`` and (when public) ``/metrics`` directly; the rest through ``build()``."""

    def __init__(self, node: Any, build: Callable[[], Any], metrics_public: bool = True,
                 fast: dict[tuple[str, str], Callable[..., Awaitable[None]]] | None = None) -> None:
        self.node = node
        self._build = build
        self._app: Any = None
        self._fast = fast or {}
        # With an API token and http.metrics_public false, /metrics needs the token: the full app checks it.
        self._metrics_here = metrics_public or getattr(node, "api_token", None) is None

    @property
    def built(self) -> bool:
        return self._app is not None

    def app(self) -> Any:
        if self._app is None:
            self._app = self._build()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan" and self._app is None:
            await self._lifespan(receive, send)  # nothing to start or stop until the full app exists
            return
        if kind == "http" and self._fast:
            handler = self._fast.get((scope.get("method"), scope.get("path")))
            if handler is not None:
                await handler(scope, receive, send, self.app)
                return
        if kind == "http" and scope.get("method") == "GET":
            path = scope.get("path") or ""
            if path == "/healthz":
                await _send(send, 200, b"ok\n", _TEXT)
                return
            if path == "/readyz":
                await self._readyz(send)
                return
            if path == "/metrics" and self._metrics_here:
                await _send(send, 200, generate_latest(), CONTENT_TYPE_LATEST.encode())
                return
        await self.app()(scope, receive, send)

    async def _readyz(self, send: Any) -> None:
        status, text = readyz_answer(self.node)
        await _send(send, status, text.encode(), _TEXT)

    @staticmethod
    async def _lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
