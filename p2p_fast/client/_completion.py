"""How the client learns that tasks finished: long polls on ``POST /v1/tasks/lookup``.

The oldest unfinished tasks (up to ``CHUNK``, the node's queue is first in, first out) are looked up with
``wait_s``: the node answers as soon as all of them are final, or after ``wait_s`` with what is final by then. A node
that cannot be reached (restarting) is asked again with a growing pause: the tasks are in its journal, and every
future still resolves exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ._http import Http, NodeError

if TYPE_CHECKING:
    from ._core import Engine

log = logging.getLogger(__name__)
CHUNK = 1000
WAIT_S = 1.0
FINAL = ("completed", "failed", "cancelled")
MAX_PAUSE = 2.0


class Completion:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self.more = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="p2p-client-completion", daemon=True)
        self.polls = 0

    def start(self) -> None:
        self.thread.start()

    def added(self, ids: list[str]) -> None:
        self.more.set()

    def stop(self) -> None:
        self.stopping = True
        self.more.set()
        self.thread.join(timeout=self.engine.timeout + WAIT_S)

    def _run(self) -> None:
        http = Http(self.engine.api, self.engine.token, self.engine.timeout)
        pause = 0.05
        try:
            while not self.stopping:
                self._cancel_remote(http)
                ids = self.engine.pending_ids()[:CHUNK]
                if not ids:
                    self.more.wait()
                    self.more.clear()
                    continue
                try:
                    doc = http.request("POST", "/v1/tasks/lookup", {"ids": ids, "wait_s": WAIT_S, "results": True},
                                       timeout=self.engine.timeout + WAIT_S, idempotent=True)
                except NodeError as exc:
                    if exc.status and exc.status < 500 and exc.status != 429:
                        log.error("task lookup refused: %s", exc)
                    time.sleep(pause)
                    pause = min(pause * 2, MAX_PAUSE)
                    continue
                pause = 0.05
                self.polls += 1
                for task in doc["tasks"]:
                    self._settle(task)
        finally:
            http.close()

    def _settle(self, task: dict[str, Any]) -> None:
        state = task.get("state")
        if state in FINAL:
            self.engine.finish(task)
        elif state == "unknown":
            self.engine.finish({"id": task["id"], "state": "failed", "attempts": [],
                                "error": "the node does not know this task any more (its journal was lost?)"})

    def _cancel_remote(self, http: Http) -> None:
        for task_id in self.engine.cancelled_ids():
            try:
                http.request("POST", f"/v1/tasks/{task_id}/cancel", idempotent=True)
            except NodeError as exc:
                if exc.status != 409:  # already final: nothing to cancel
                    log.debug("cancel %s: %s", task_id, exc)
            self.engine.finish({"id": task_id, "state": "cancelled", "error": "cancelled", "attempts": []})
