"""What the routes answered without FastAPI share: the gate a request passes to be answered there, its body, and
the JSON answer.

The lean routes (``api.fast_submit``, ``api.lean_routes``) answer only a request that is *plainly* acceptable, and
hand everything else to the full app untouched, so that every refusal keeps the full app's status and JSON. The
gate here is the part every such route asks: the right bearer token when the node has one, and for a body a
``Content-Length`` within ``http.max_body_bytes``, a JSON content type and no chunked encoding.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Asgi = Callable[[Any, Any, Any], Awaitable[None]]
Fallback = Callable[[], Asgi]


class Gate:
    """Whether a request may be answered by a lean route. ``token``: the API token or None; ``max_body``:
    ``http.max_body_bytes``."""

    def __init__(self, token: str | None, max_body: int) -> None:
        self.max_body = max_body
        self._auth: Any = None
        if token is not None:
            from p2p_fast.app.api.token import BearerAuth

            self._auth = BearerAuth(_refuse, token)  # its header check only; a refusal is the full app's

    @property
    def has_token(self) -> bool:
        return self._auth is not None

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        return self._auth is None or self._auth.authorized(headers)

    def body_length(self, headers: list[tuple[bytes, bytes]]) -> int | None:
        """The announced length of a JSON body that may be answered here; None sends the request to the full app."""
        length = None
        json_body = False
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit():
                    return None
                length = int(value)
            elif name == b"content-type":
                json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
            elif name == b"transfer-encoding":
                return None
        if length is None or length > self.max_body or not json_body or not self.authorized(headers):
            return None
        return length


async def _refuse(scope: Any, receive: Any, send: Any) -> None:  # never called: BearerAuth's inner app
    raise AssertionError("the lean routes use BearerAuth only to check the header")


async def read_body(receive: Any, length: int) -> tuple[bytes, bool]:
    """The request body, and whether it came whole (False: the client disconnected or sent more than announced)."""
    parts: list[bytes] = []
    got = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunk = message.get("body", b"")
        got += len(chunk)
        if got > length:
            return b"", False
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), True


#: :func:`read_json`'s document for a body that is not JSON
NOT_JSON: Any = object()


async def read_json(receive: Any, length: int) -> tuple[Any, bytes] | None:
    """A JSON body's document (:data:`NOT_JSON` when it does not parse) and its bytes; None when it did not come
    whole (the client disconnected or sent more than announced: there is nobody to answer)."""
    body, complete = await read_body(receive, length)
    if not complete:
        return None
    try:
        return json.loads(body), body
    except (ValueError, UnicodeDecodeError, RecursionError):
        return NOT_JSON, body


def internal_error(exc: BaseException) -> dict[str, Any]:
    """The JSON of an unexpected failure (status 500), as every route answers it: the exception's type only."""
    return {"error": "internal error", "detail": type(exc).__name__}


class Replay:
    """``receive`` for the full app after a lean route read the body: the body once, then the real ``receive``."""

    def __init__(self, body: bytes, receive: Any) -> None:
        self.body: bytes | None = body
        self.receive = receive

    async def __call__(self) -> Any:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.receive()


def json_bytes(doc: Any) -> bytes:
    """The bytes Starlette's ``JSONResponse`` renders for ``doc``; ``TypeError`` or ``ValueError`` for a document
    that is not plain JSON (a NaN, an object), which the full app's encoder would have to handle."""
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


async def send_json(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
