"""Routes of the HTTP listener. Health and metrics for operators; ``/v1`` JSON for clients and ``p2p-ctl``.

Every error is JSON (``{"error": ..., "detail": ...}``) with a 4xx/5xx code; request bodies are size-limited before
they are parsed. With an API token configured every route but ``/healthz``, ``/readyz``, the dashboard's static
files under ``/ui`` (and ``/metrics`` unless ``http.metrics_public`` is false) needs ``Authorization: Bearer
<token>`` (``p2p_fast.app.api.token``). Task routes (``p2p_fast.app.api.tasks``) are added when the node runs the task
service; ``GET /v1/events`` is ``api.events``, ``/ui`` and ``/docs`` are ``api.static``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from p2p_fast import __version__
from p2p_fast.app.api.front import readyz_answer
from p2p_fast.app.api.lean import internal_error
from p2p_fast.app.api.lean_routes import GOSSIP_LOG_MAX, GOSSIP_MAX_CHARS


class GossipBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=GOSSIP_MAX_CHARS)


def _error(status: int, error: str, detail: Any = None, close: bool = False) -> JSONResponse:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    # ``close``: the request body was left unread, so the connection cannot carry another request.
    return JSONResponse(body, status_code=status, headers={"connection": "close"} if close else None)


class BodyLimit:
    """Reject bodies over ``limit`` bytes with 413 before any handler reads them (Content-Length or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    await _error(400, "bad Content-Length header", close=True)(scope, receive, send)
                    return
                if too_big:
                    await _error(413, f"request body over the {self.limit}-byte limit", close=True)(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _error(413, f"request body over the {self.limit}-byte limit", close=True)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


if TYPE_CHECKING:
    from p2p_fast.app.node import Node


def create_app(node: Node) -> Any:
    from p2p_fast.app.api.lean_http import check_v1_models_lazily

    check_v1_models_lazily()  # before any route is added: each one asks of its parameters
    # /docs from local files (api.static), no ReDoc: FastAPI's own pages load their assets from a CDN.
    app = FastAPI(title="p2p-fast node API", version=__version__, docs_url=None, redoc_url=None,
                  description="Health, metrics and the task API of one p2p-fast node. Dashboard: /ui.")
    from p2p_fast.app.api.token import BearerAuth

    token = getattr(node, "api_token", None)  # loaded (and checked) when the node started
    if token is not None:
        app.add_middleware(BearerAuth, token=token, metrics_public=node.cfg.http.metrics_public)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "body", "problem": e.get("msg")}
                    for e in exc.errors()]
        return _error(422, "invalid request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(internal_error(exc), status_code=500)

    from p2p_fast.app.api.events import install_event_routes
    from p2p_fast.app.api.static import install_docs, install_ui

    install_event_routes(app, node.events, lambda: str(node.peer_id))
    install_ui(app)
    install_docs(app)

    @app.get("/healthz", response_class=PlainTextResponse, summary="The process is alive")
    async def healthz() -> str:
        return "ok\n"

    @app.get("/readyz", summary="Bootstrapped and connected to at least one peer")
    async def readyz() -> Response:
        status, text = readyz_answer(node)
        return PlainTextResponse(text, status_code=status)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status", summary="Node status")
    async def status() -> dict[str, Any]:
        return node.status()

    @app.get("/v1/peers", summary="Connected peers")
    async def peers() -> list[dict[str, Any]]:
        return node.peers()

    @app.get("/v1/gossip", summary="Recent broadcast texts received (newest last), with send and receive times")
    async def gossip(limit: int = 100) -> list[dict[str, Any]]:
        if not 1 <= limit <= GOSSIP_LOG_MAX:
            raise StarletteHTTPException(400, f"limit must be between 1 and {GOSSIP_LOG_MAX}")
        return node.gossip_log[-limit:]

    @app.post("/v1/gossip", status_code=202, summary="Broadcast a text to every node")
    async def gossip_send(body: GossipBody) -> dict[str, str]:
        try:
            await node.publish_text(body.text)
        except ValueError as exc:
            raise StarletteHTTPException(413, str(exc)) from None
        return {"status": "sent"}

    @app.get("/v1/capabilities", summary="This node's capabilities and the live network's")
    async def capabilities() -> dict[str, Any]:
        return node.capability_view()

    tasks = getattr(node, "tasks", None)
    if tasks is not None:  # built from the task service here: the service knows nothing of HTTP
        from p2p_fast.app.api.tasks import install_routes as install_task_routes

        install_task_routes(app, tasks, max_body_bytes=node.cfg.http.max_body_bytes, api_token=token,
                            task_lane_port=getattr(node, "task_lane_port", None))
    return app


def wrap(app: Any, max_body: int) -> Any:
    return BodyLimit(app, max_body)
