"""Locust users for p2p-fast: submit tasks to the cluster's task API, poll until each is final, and report every
task's end-to-end latency (submit -> completed) as a locust request.

Each user picks API endpoints round-robin from ``P2P_API_URLS`` (comma-separated base URLs: the nodes of the test
bed, or port-forwards/Services of a real cluster); ``--host`` is used when that is unset. Rows in the report:

- ``task <type>`` (request type ``TASK``): one per task, submit to final state; a failure is a task that ended
  ``failed``/``cancelled``, was refused, or did not finish within ``P2P_TASK_DEADLINE`` seconds. This is the row
  ./stress-test.sh summarises (tasks/s, p50/p95/p99, failure rate).
- ``POST /v1/tasks`` and ``GET /v1/tasks/[id]``: the HTTP calls themselves.

Environment: ``P2P_TASK_TYPE`` (compute), ``P2P_TASK_PAYLOAD`` (``sha256 2000 {user}-{n}``: ``{user}`` and ``{n}``
are filled in), ``P2P_TASK_DEADLINE`` (60), ``P2P_POLL_WAIT`` (long-poll seconds per GET, 10), ``P2P_THINK_TIME``
(seconds between tasks per user, 0).

    locust -f stress/locustfile.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:8080
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from locust import HttpUser, between, constant, events, task

TASK_TYPE = os.environ.get("P2P_TASK_TYPE", "compute")
PAYLOAD = os.environ.get("P2P_TASK_PAYLOAD", "sha256 2000 {user}-{n}")
DEADLINE_S = float(os.environ.get("P2P_TASK_DEADLINE", "60"))
POLL_WAIT_S = float(os.environ.get("P2P_POLL_WAIT", "10"))
THINK_S = float(os.environ.get("P2P_THINK_TIME", "0"))
FINAL = ("completed", "failed", "cancelled")
TASK_ROW = f"task {TASK_TYPE}"

_user_ids = itertools.count()


def api_urls(host: str | None) -> list[str]:
    urls = [u.strip().rstrip("/") for u in os.environ.get("P2P_API_URLS", "").split(",") if u.strip()]
    if not urls and host:
        urls = [host.rstrip("/")]
    if not urls:
        raise RuntimeError("no task API: set P2P_API_URLS or --host")
    return urls


class TaskUser(HttpUser):
    """Submits one task at a time and waits for it (a closed loop per user, so users bound the load)."""

    wait_time = between(THINK_S, THINK_S * 1.5) if THINK_S > 0 else constant(0)
    host = os.environ.get("P2P_API_URLS", "").split(",")[0].strip() or None

    def on_start(self) -> None:
        self.user_id = next(_user_ids)
        urls = api_urls(self.host)
        self.endpoints = itertools.cycle(urls[self.user_id % len(urls):] + urls[:self.user_id % len(urls)])
        self.n = 0

    def _report(self, start: float, exc: Exception | None, length: int = 0, **ctx: Any) -> None:
        events.request.fire(request_type="TASK", name=TASK_ROW, response_time=(time.perf_counter() - start) * 1000,
                            response_length=length, exception=exc, context=ctx)

    @task
    def submit_and_wait(self) -> None:
        base = next(self.endpoints)
        self.n += 1
        payload = PAYLOAD.format(user=self.user_id, n=self.n)
        start = time.perf_counter()
        with self.client.post(f"{base}/v1/tasks", json={"type": TASK_TYPE, "payload": payload},
                              name="POST /v1/tasks", catch_response=True, timeout=30) as r:
            if r.status_code != 202:
                r.failure(f"submit answered {r.status_code}: {r.text[:200]}")
                self._report(start, RuntimeError(f"submit refused ({r.status_code})"))
                return
            task_id = r.json()["id"]
        deadline = start + DEADLINE_S
        doc: dict[str, Any] = {}
        while time.perf_counter() < deadline:
            wait = max(0.0, min(POLL_WAIT_S, deadline - time.perf_counter()))
            with self.client.get(f"{base}/v1/tasks/{task_id}", params={"wait": round(wait, 2)},
                                 name="GET /v1/tasks/[id]", catch_response=True, timeout=wait + 30) as r:
                if r.status_code != 200:
                    r.failure(f"lookup answered {r.status_code}: {r.text[:200]}")
                    self._report(start, RuntimeError(f"lookup failed ({r.status_code})"))
                    return
                doc = r.json()
            if doc.get("state") in FINAL:
                break
        state = doc.get("state", "unknown")
        if state == "completed":
            self._report(start, None, len(doc.get("result") or ""), worker=doc.get("worker"))
        elif state in FINAL:
            self._report(start, RuntimeError(f"task {state}: {(doc.get('error') or '')[:120]}"))
        else:
            self._report(start, TimeoutError(f"task not final after {DEADLINE_S:.0f}s (state {state})"))
