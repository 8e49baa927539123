"""``POST /v1/tasks/batch`` without FastAPI for a plainly valid request: the client's submission path.

Why: every task a :mod:`p2p_fast.client` submits comes through this route, and a lone task's round trip waits for
it. Through the full app a request crosses six middlewares, the router, dependency solving and a pydantic model
before the handler runs (~0.2 ms of the submitting node's loop per request, measured: bench/RESULTS.md "Client
round trip"), which the embedded node's ``submit_many`` never pays. Here the same request is checked by hand and
submitted directly.

Only a request that is *plainly valid* is answered here: the right bearer token (when the node has one), a
``Content-Length`` within ``http.max_body_bytes``, a JSON content type, and a body the ``TaskBatch`` model of
``api.tasks`` would accept as it is (field names, JSON types, ranges). Anything else, and anything in doubt, goes to
the full app untouched (the body already read is handed to it again), so every refusal (401, 413, 422, 403) keeps
the full app's exact status and JSON. A submission the task service refuses (400 unknown type, 413, 507) is answered
here with the same JSON as the full app's handler.

After the tasks are accepted the handler yields once before it answers: the link writer that carries the first task
to its worker is already runnable, and the task's trip is what the client waits for, not this answer.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Callable

import trio

from p2p_fast.app.api.lean import NOT_JSON, Fallback, Gate, Replay, internal_error, json_bytes, read_json, send_json
from p2p_fast.protocols.tasks.functions import FUNCTION_TYPE
from p2p_fast.protocols.tasks.redundancy import MAX_REDUNDANCY
from p2p_fast.protocols.tasks.spec import MAX_RETRIES, MAX_REWARD, MAX_TIMEOUT_S, TaskSpec, TaskSpecError

log = logging.getLogger(__name__)
CODE_NEEDS_TOKEN = ("this node accepts Python functions and packages over HTTP only when its API token is set "
                    "(http.token_file or P2P_API_TOKEN): it submits them to workers in its own name")

PATH = "/v1/tasks/batch"
MAX_BATCH = 10000
TYPE_MAX_LENGTH = 64
ENCODINGS = ("utf-8", "base64")
FIELDS = frozenset({"type", "payload", "payload_encoding", "timeout_s", "max_retries", "reward", "redundancy"})
# int fields and their (low, high) bounds, inclusive, as in the TaskSubmit model
INT_FIELDS = {"max_retries": (0, MAX_RETRIES), "reward": (0, MAX_REWARD), "redundancy": (1, MAX_REDUNDANCY)}


def build_spec(type_: str, payload: str, encoding: str, timeout_s: float | None, max_retries: int | None,
               reward: int | None, redundancy: int | None) -> TaskSpec:
    """The ``TaskSpec`` of one validated submission (shared with ``api.tasks.TaskSubmit.spec``)."""
    if encoding == "base64":
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise TaskSpecError("payload is not valid base64") from None
    else:
        data = payload.encode("utf-8")
    return TaskSpec(type_, data, timeout_s, max_retries, reward, redundancy)


def _is_int(v: Any) -> bool:
    return type(v) is int  # bool is an int subclass; the strict model refuses it


Fields = tuple[str, str, str, float | None, int | None, int | None, int | None]


def plain_task(t: Any) -> Fields | None:
    """``build_spec``'s arguments for one task the strict ``TaskSubmit`` model would accept as it is; None when
    in any doubt."""
    if type(t) is not dict or not FIELDS.issuperset(t):
        return None
    type_ = t.get("type")
    if type(type_) is not str or not 1 <= len(type_) <= TYPE_MAX_LENGTH:
        return None
    payload = t.get("payload", "")
    encoding = t.get("payload_encoding", "utf-8")
    if type(payload) is not str or type(encoding) is not str or encoding not in ENCODINGS:
        return None
    timeout = t.get("timeout_s")
    if timeout is not None:
        if type(timeout) is not float and not _is_int(timeout):
            return None
        if not 0 < timeout <= MAX_TIMEOUT_S:  # NaN fails here too
            return None
        timeout = float(timeout)
    for name, (low, high) in INT_FIELDS.items():
        v = t.get(name)
        if v is not None and (not _is_int(v) or not low <= v <= high):
            return None
    return type_, payload, encoding, timeout, t.get("max_retries"), t.get("reward"), t.get("redundancy")


def plain_batch(doc: Any) -> list[Fields] | None:
    """Every task of a ``{"tasks": [...]}`` body the strict ``TaskBatch`` model would accept; None when in doubt.
    Nothing is decoded yet: like the model, the whole body is checked before any payload is."""
    if type(doc) is not dict or len(doc) != 1:
        return None
    tasks = doc.get("tasks")
    if type(tasks) is not list or not 1 <= len(tasks) <= MAX_BATCH:
        return None
    out = []
    for t in tasks:
        fields = plain_task(t)
        if fields is None:
            return None
        out.append(fields)
    return out


async def submit_specs(service: Any, tasks: list[Fields] | list[TaskSpec]) -> tuple[int, dict[str, Any]]:
    """Submit a checked batch (``plain_batch``'s fields, or specs the ``TaskBatch`` model made): ``(202, {"ids":
    [...]})``, or the status and JSON the full app's handler gives when the service refuses (400 unknown type, 413,
    507; 400 for a payload that is not base64). The HTTP route above and the task lane (``api.lane``) answer with
    it."""
    try:
        specs = [t if isinstance(t, TaskSpec) else build_spec(*t) for t in tasks]
        ids = await service.submit_many(specs)
    except TaskSpecError as exc:
        return exc.status, {"error": str(exc)}
    except Exception as exc:
        log.exception("submitting a batch failed")
        return 500, internal_error(exc)
    return 202, {"ids": ids}


class FastSubmit:
    """The lean ``POST /v1/tasks/batch``. ``service()``: the node's task service now (None: not running one);
    ``token``: the API token or None; ``max_body``: ``http.max_body_bytes``."""

    def __init__(self, service: Callable[[], Any], token: str | None, max_body: int) -> None:
        self.service = service
        self.gate = Gate(token, max_body)
        self.answered = 0  # requests answered here (the rest went to the full app)

    async def __call__(self, scope: Any, receive: Any, send: Any, fallback: Fallback) -> None:
        service = self.service()
        length = self.gate.body_length(scope["headers"])
        if service is None or length is None:
            await fallback()(scope, receive, send)
            return
        got = await read_json(receive, length)
        if got is None:
            return  # the client went away, or sent more than it announced: nothing to answer
        doc, body = got
        tasks = plain_batch(doc) if doc is not NOT_JSON else None
        if tasks is None or (not self.gate.has_token and any(t[0] == FUNCTION_TYPE for t in tasks)):
            # The full app's answer (422 naming the field, 403 for code without a token) is the one.
            await fallback()(scope, Replay(body, receive), send)
            return
        status, answer = await submit_specs(service, tasks)
        if status != 202:
            await send_json(send, status, json_bytes(answer))
            return
        self.answered += 1
        await trio.lowlevel.checkpoint()  # the link writers first: the tasks' trip is what the client waits for
        await send_json(send, 202, json_bytes(answer))
