"""The answers of the task routes that both the full app (``api.tasks``) and the lean routes (``api.lean_routes``)
give, without FastAPI: what a request may carry, and several tasks looked up at once."""

from __future__ import annotations

import math
import re
from typing import Any

import trio

from p2p_fast.app.api.fast_submit import MAX_BATCH

TASK_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_WAIT_S = 60.0
LOOKUP_FIELDS = frozenset({"ids", "wait_s", "results"})


def brief(rec: Any) -> dict[str, Any]:
    return {"id": rec.id, "type": rec.type, "state": rec.state, "worker": rec.worker,
            "attempts": len(rec.attempts), "error": rec.error}


def limits_doc(service: Any, max_body_bytes: int, api_token: str | None, task_lane_port: int | None) -> dict[str, Any]:
    """``GET /v1/tasks/limits``: ``max_body_bytes`` is ``http.max_body_bytes``, ``task_lane_port`` where the task lane
    listens (None: no lane)."""
    return {"max_body_bytes": max_body_bytes, "max_payload_bytes": service.cfg.max_payload_bytes,
            "max_batch": MAX_BATCH, "max_wait_s": MAX_WAIT_S, "code_over_http": api_token is not None,
            "task_lane_port": task_lane_port}


async def lookup_doc(service: Any, ids: list[str], wait_s: float, results: bool) -> dict[str, Any]:
    """``POST /v1/tasks/lookup`` for well-formed ``ids``: after waiting up to ``wait_s`` for all to be final, each
    task whole (``results``) or in brief, ``unknown`` for an id the node has no task of."""
    if wait_s > 0:
        with trio.move_on_after(wait_s):
            for task_id in ids:
                await service.wait_record(task_id, None)
    out = []
    for task_id in ids:
        rec = service.get(task_id)
        if rec is None:
            out.append({"id": task_id, "state": "unknown"})
        else:
            out.append(rec.as_dict() if results else brief(rec))
    return {"tasks": out}


def plain_lookup(doc: Any) -> tuple[list[str], float, bool] | None:
    """``lookup_doc``'s arguments from a body the strict ``TaskLookup`` model of ``api.tasks`` would accept as it is,
    with every id well-formed; None when in any doubt (the full app answers those)."""
    if type(doc) is not dict or "ids" not in doc or not LOOKUP_FIELDS.issuperset(doc):
        return None
    ids = doc["ids"]
    if type(ids) is not list or not 1 <= len(ids) <= MAX_BATCH:
        return None
    if not all(type(i) is str and TASK_ID_RE.match(i) for i in ids):
        return None
    wait = doc.get("wait_s", 0.0)
    if type(wait) not in (int, float) or not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT_S:
        return None
    results = doc.get("results", True)
    if type(results) is not bool:
        return None
    return ids, float(wait), results
