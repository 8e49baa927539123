"""HTTP routes of the task service, added to the node's FastAPI app by ``create_app`` when the node runs one.

The routes depend on the service (``p2p_fast.protocols.tasks.service.TaskService``), never the other way round.

Bodies are strict: unknown fields, wrong JSON types and out-of-range values are 422 with a JSON error naming the
field; an unknown task type is 400, a payload over ``tasks.max_payload_bytes`` 413, a malformed task id 400 and an
unknown one 404. Everything runs on the node's own trio loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from p2p_fast.app.api.fast_submit import CODE_NEEDS_TOKEN, MAX_BATCH, build_spec
from p2p_fast.app.api.task_docs import MAX_WAIT_S, TASK_ID_RE, brief, limits_doc, lookup_doc
from p2p_fast.protocols.tasks.functions import FUNCTION_TYPE
from p2p_fast.protocols.tasks.journal import FINAL_STATES, STATES
from p2p_fast.protocols.tasks.packages import NAME_RE as PACKAGE_NAME_RE
from p2p_fast.protocols.tasks.redundancy import MAX_REDUNDANCY
from p2p_fast.protocols.tasks.spec import TaskSpec, TaskSpecError

if TYPE_CHECKING:
    from p2p_fast.protocols.tasks.service import TaskService

MAX_OFFSET = 10**12  # SQLite integers are 64-bit: a larger offset was a 500 (found by schemathesis)


def _error(status: int, error: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


class TaskSubmit(BaseModel):
    """One task. ``payload`` is text (UTF-8), or base64 with ``payload_encoding: "base64"``. What this model and
    ``TaskBatch`` accept, ``api.fast_submit`` accepts too (it answers plainly valid batches without this app)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: str = Field(min_length=1, max_length=64, description="task type: echo, compute, storage, sleep or a plugin")
    payload: str = Field(default="", description="the task's input")
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    timeout_s: float | None = Field(default=None, gt=0, le=86400, description="per-attempt timeout")
    max_retries: int | None = Field(default=None, ge=0, le=100, description="retries after the first attempt")
    reward: int | None = Field(default=None, ge=0, le=10**12, description="credits paid for the verified result")
    redundancy: int | None = Field(default=None, ge=1, le=MAX_REDUNDANCY,
                                   description="distinct workers that run the task; the majority result is accepted")

    def spec(self) -> TaskSpec:
        return build_spec(self.type, self.payload, self.payload_encoding, self.timeout_s, self.max_retries,
                          self.reward, self.redundancy)


class TaskBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    tasks: list[TaskSubmit] = Field(min_length=1, max_length=MAX_BATCH)


def model_batch(doc: Any) -> tuple[list[TaskSpec], set[str]] | list[dict[str, Any]]:
    """A ``{"tasks": [...]}`` document through the ``TaskBatch`` model, for a caller without FastAPI's request
    handling (the task lane, ``api.lane``, for a batch ``fast_submit.plain_batch`` was in doubt about): its specs and
    task types, or the problems the full app's 422 lists (``field``, ``problem``)."""
    from pydantic import ValidationError

    try:
        batch = TaskBatch.model_validate(doc)
        return [t.spec() for t in batch.tasks], {t.type for t in batch.tasks}
    except ValidationError as exc:
        return [{"field": ".".join(str(p) for p in e.get("loc", ())) or "body", "problem": e.get("msg")}
                for e in exc.errors()]


class TaskLookup(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    ids: list[str] = Field(min_length=1, max_length=MAX_BATCH)
    wait_s: float = Field(default=0.0, ge=0, le=MAX_WAIT_S, description="wait until all are final, at most this")
    results: bool = Field(default=True, description="include results and attempts")


class Submitted(BaseModel):
    id: str
    state: str


def _code_refused(api_token: str | None, types: set[str]) -> JSONResponse | None:
    """Functions and packages are code: through the API a node sends them in its own name, so only with a token."""
    if FUNCTION_TYPE in types and api_token is None:
        return _error(403, CODE_NEEDS_TOKEN)
    return None


def install_routes(app: Any, service: TaskService, *, max_body_bytes: int, api_token: str | None,
                   task_lane_port: int | None = None) -> None:
    """Add the task routes for ``service`` to ``app``. ``max_body_bytes`` (http.max_body_bytes) is what
    ``/v1/tasks/limits`` reports, with ``task_lane_port`` (where the task lane listens, ``api.lane``; None: no
    lane); ``api_token``: the node's API token, without which no code is accepted."""
    def bad_id(task_id: str) -> JSONResponse | None:
        if not TASK_ID_RE.match(task_id):
            return _error(400, "malformed task id", "a task id is 32 lowercase hex digits")
        return None

    @app.post("/v1/tasks", status_code=202, summary="Submit a task", response_model=Submitted,
              responses={400: {"description": "unknown task type"}, 413: {"description": "payload too large"},
                         422: {"description": "invalid body"}})
    async def submit(body: TaskSubmit, wait: float = Query(
            default=0.0, ge=0, le=MAX_WAIT_S,
            description="wait up to this long and answer 200 with the finished task (one round trip)")) -> Any:
        if (resp := _code_refused(api_token, {body.type})) is not None:
            return resp
        try:
            (task_id,) = await service.submit_many([body.spec()])
        except TaskSpecError as exc:
            return _error(exc.status, str(exc))
        if wait > 0:
            rec = await service.wait_record(task_id, wait)
            if rec is not None and rec.state in FINAL_STATES:
                return JSONResponse(rec.as_dict(), status_code=200)
        return {"id": task_id, "state": "pending"}

    @app.post("/v1/tasks/batch", status_code=202, summary="Submit many tasks at once (all or none)")
    async def submit_batch(body: TaskBatch) -> Any:
        if (resp := _code_refused(api_token, {t.type for t in body.tasks})) is not None:
            return resp
        try:
            ids = await service.submit_many([t.spec() for t in body.tasks])
        except TaskSpecError as exc:
            return _error(exc.status, str(exc))
        return {"ids": ids}

    @app.get("/v1/tasks/limits", summary="What one request may carry: body, payload and batch sizes")
    async def limits() -> Any:
        return limits_doc(service, max_body_bytes, api_token, task_lane_port)

    @app.post("/v1/blobs", status_code=201, summary="Store a package file (a .py module or a wheel) for function tasks")
    async def put_blob(request: Request, name: str = Query(min_length=1, max_length=204,
                                                           description="file name: module.py or a .whl")) -> Any:
        if (resp := _code_refused(api_token, {FUNCTION_TYPE})) is not None:
            return resp
        if not PACKAGE_NAME_RE.match(name):
            return _error(422, f"package name {name!r} must be a file name ending in .py or .whl")
        data = await request.body()
        limit = service.cfg.max_payload_bytes
        if len(data) > limit:
            return _error(413, f"package of {len(data)} bytes is over tasks.max_payload_bytes ({limit})")
        key = service.put_blob(data)
        return {"sha256": key, "name": name, "size": len(data)}

    @app.post("/v1/tasks/lookup", summary="Several tasks at once, optionally waiting until all are final")
    async def lookup(body: TaskLookup) -> Any:
        for task_id in body.ids:
            if (resp := bad_id(task_id)) is not None:
                return resp
        return await lookup_doc(service, body.ids, body.wait_s, body.results)

    @app.get("/v1/tasks/{task_id}", summary="One task: state, attempts, worker, result or error")
    async def get_task(task_id: str, wait: float = Query(default=0.0, ge=0, le=MAX_WAIT_S,
                                                         description="wait up to this long for a final state")) -> Any:
        if (resp := bad_id(task_id)) is not None:
            return resp
        rec = await service.wait_record(task_id, wait) if wait > 0 else service.get(task_id)
        if rec is None:
            return _error(404, f"no task {task_id}")
        return rec.as_dict(with_payload=True)

    @app.post("/v1/tasks/{task_id}/cancel", summary="Cancel a pending or running task")
    async def cancel(task_id: str) -> Any:
        if (resp := bad_id(task_id)) is not None:
            return resp
        rec = service.get(task_id)
        if rec is None:
            return _error(404, f"no task {task_id}")
        if rec.state in FINAL_STATES:
            return _error(409, f"task {task_id} is already {rec.state}")
        rec = service.cancel(task_id)
        return rec.as_dict() if rec is not None else _error(409, "task finished meanwhile")

    @app.get("/v1/tasks", summary="Tasks of this node, oldest first, optionally by state")
    async def list_tasks(state: Literal["pending", "running", "completed", "failed", "cancelled"] | None = None,
                         limit: int = Query(default=100, ge=1, le=MAX_BATCH),
                         offset: int = Query(default=0, ge=0, le=MAX_OFFSET)) -> Any:
        recs = service.list_tasks(state, limit, offset)
        return {"tasks": [brief(r) for r in recs], "counts": service.counts(), "states": list(STATES)}

    @app.get("/v1/ledger", summary="Credits earned and spent, per-peer credit balances, reputation, recent receipts")
    async def ledger(limit: int = Query(default=20, ge=0, le=MAX_BATCH),
                     verify: bool = Query(default=False, description="re-check every entry's signature"),
                     by_peer: bool = Query(default=False, description="credits paid to / received from each peer")
                     ) -> Any:
        doc: dict[str, Any] = dict(service.ledger.status())
        doc["reputation"] = service.ledger.reputation_doc()
        doc["credit"] = service.ledger.credit.doc()
        doc["entries"] = service.ledger.entries(limit) if limit else []
        if by_peer:
            doc["by_peer"] = service.ledger.by_peer()
        if verify:
            doc["verification"] = service.ledger.verify_all()
        return doc
