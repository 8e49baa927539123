"""The node's JSON reads, its gossip send and the task lookups, answered without FastAPI for a plainly valid request.

Why: the FastAPI app, once built, holds 12-13 MiB of a node's memory (FastAPI, Starlette, pydantic and the OpenAPI
models; bench/RESULTS.md "RSS of the API"), and what a monitor, ``p2p-ctl`` or the scale benchmark asks of most
nodes is only these routes: ``GET /v1/status``, ``/v1/peers``, ``/v1/capabilities``, ``/v1/gossip``,
``/v1/tasks/limits``, ``POST /v1/gossip`` and ``POST /v1/tasks/lookup``. Answered here, a node that is only
watched never builds the app. The answers are the full app's own: the same node methods and ``api.task_docs``
functions, the same status codes and JSON.

As with ``api.fast_submit``, only a request that is *plainly* valid is answered here (``api.lean.Gate``: the right
token when the node has one; no query string but a plain ``limit`` where the route takes one; a JSON body the full
app's model would accept as it is). Anything else, and an answer that is not plain JSON, goes to the full app, whose
status and JSON the user then gets.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Awaitable, Callable

from p2p_fast.app.api.lean import NOT_JSON, Fallback, Gate, Replay, internal_error, json_bytes, read_json, send_json
from p2p_fast.app.api.task_docs import limits_doc, lookup_doc, plain_lookup

log = logging.getLogger(__name__)
GOSSIP_MAX_CHARS = 1024 * 1024  # the POST /v1/gossip text, in characters (the full app's GossipBody)
GOSSIP_LOG_MAX = 1000
_LIMIT = re.compile(rb"limit=([1-9][0-9]{0,3})")

Handler = Callable[[Any, Any, Any, Fallback], Awaitable[None]]


def plain_limit(query: bytes) -> int | None:
    """``GET /v1/gossip``'s ``limit`` (100 when absent) from a query string that is plainly valid; None otherwise."""
    if not query:
        return 100
    match = _LIMIT.fullmatch(query)
    if match is None or int(match.group(1)) > GOSSIP_LOG_MAX:
        return None
    return int(match.group(1))


def plain_gossip(doc: Any) -> str | None:
    """The text of a ``POST /v1/gossip`` body the strict ``GossipBody`` model would accept; None in any doubt."""
    if type(doc) is not dict or len(doc) != 1:
        return None
    text = doc.get("text")
    if type(text) is not str or not 1 <= len(text) <= GOSSIP_MAX_CHARS:
        return None
    try:
        text.encode("utf-8")  # JSON may carry a lone surrogate, which no message can
    except UnicodeEncodeError:
        return None
    return text


class LeanRoutes:
    """The routes above for ``node``. ``token``: the API token or None; ``max_body``: ``http.max_body_bytes``."""

    def __init__(self, node: Any, token: str | None, max_body: int) -> None:
        self.node = node
        self.token = token
        self.gate = Gate(token, max_body)
        self.answered = 0  # requests answered here (the rest went to the full app)

    def table(self) -> dict[tuple[str, str], Handler]:
        """``(method, path) -> handler``, as ``api.front.LazyFront`` takes them."""
        return {("GET", "/v1/status"): self._status, ("GET", "/v1/peers"): self._peers,
                ("GET", "/v1/capabilities"): self._capabilities, ("GET", "/v1/gossip"): self._gossip_log,
                ("GET", "/v1/tasks/limits"): self._limits,
                ("POST", "/v1/gossip"): self._gossip_send, ("POST", "/v1/tasks/lookup"): self._lookup}

    async def _read(self, scope: Any, receive: Any, send: Any, fallback: Fallback,
                    answer: Callable[[], Any], plain: bool | None = None) -> None:
        """Answer a GET with ``answer()`` as JSON (200) when the request (``plain``, by default: it has no query
        string) and the answer are plain."""
        if plain is None:
            plain = not scope.get("query_string")
        if plain and self.gate.authorized(scope["headers"]):
            # Not plain JSON (the full app's encoder renders it), or the read failed: the full app answers that with
            # its JSON 500 (a read changes nothing: asking twice is safe).
            try:
                body = json_bytes(answer())
            except Exception:
                pass
            else:
                self.answered += 1
                await send_json(send, 200, body)
                return
        await fallback()(scope, receive, send)

    async def _status(self, scope: Any, receive: Any, send: Any, fallback: Fallback) -> None:
        await self._read(scope, receive, send, fallback, self.node.status)

    async def _peers(self, scope: Any, receive: Any, send: Any, fallback: Fallback) -> None:
        await self._read(scope, receive, send, fallback, self.node.peers)

    async def _capabilities(self, scope: Any, receive: Any, send: Any, fallback: Fallback) -> None:
        await self._read(scope, receive, send, fallback, self.node.capability_view)

    async def _limits(self, scope: Any, receive: Any, send: Any, fallback: Fallback) -> None:
        service = getattr(self.node, "tasks", None)
        await self._read(scope, receive, send, fallback, lambda: limits_doc(
            service, self.gate.max_body, self.token, getattr(self.node, "task_lane_port", None)),
            plain=service is not None and not scope.get("query_string"))

    async def _gossip_log(self, scope: Any, receive: Any, send: Any, fallback: Fallback) -> None:
        limit = plain_limit(scope.get("query_string") or b"")
        if limit is None:
            await fallback()(scope, receive, send)
            return
        await self._read(scope, receive, send, fallback, lambda: self.node.gossip_log[-limit:], plain=True)

    async def _body(self, scope: Any, receive: Any, send: Any, fallback: Fallback) -> tuple[Any, bytes] | None:
        """The JSON document of a POST the gate lets through, with its bytes; None when the request was handed on
        (or the client went away)."""
        length = self.gate.body_length(scope["headers"]) if not scope.get("query_string") else None
        if length is None:
            await fallback()(scope, receive, send)
            return None
        got = await read_json(receive, length)
        if got is not None and got[0] is NOT_JSON:
            await fallback()(scope, Replay(got[1], receive), send)
            return None
        return got

    async def _gossip_send(self, scope: Any, receive: Any, send: Any, fallback: Fallback) -> None:
        got = await self._body(scope, receive, send, fallback)
        if got is None:
            return
        text = plain_gossip(got[0])
        if text is None:
            await fallback()(scope, Replay(got[1], receive), send)
            return
        try:
            await self.node.publish_text(text)
        except ValueError as exc:  # over the network's message limit: the full app's 413
            await send_json(send, 413, json_bytes({"error": str(exc)}))
            return
        except Exception as exc:  # as the full app's handler of the unexpected answers
            log.exception("POST /v1/gossip failed")
            await send_json(send, 500, json_bytes(internal_error(exc)))
            return
        self.answered += 1
        await send_json(send, 202, json_bytes({"status": "sent"}))

    async def _lookup(self, scope: Any, receive: Any, send: Any, fallback: Fallback) -> None:
        service = getattr(self.node, "tasks", None)
        if service is None:
            await fallback()(scope, receive, send)
            return
        got = await self._body(scope, receive, send, fallback)
        if got is None:
            return
        args = plain_lookup(got[0])
        answer = None
        if args is not None:
            try:
                answer = json_bytes(await lookup_doc(service, *args))
            except Exception:
                answer = None  # not plain JSON, or it failed: the full app answers (a lookup changes nothing)
        if answer is None:
            await fallback()(scope, Replay(got[1], receive), send)
            return
        self.answered += 1
        await send_json(send, 200, answer)

