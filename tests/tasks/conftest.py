"""Helpers for the task tests: a network of real node processes and a small API client."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import pytest

from harness import Cluster, NodeProcess, node_config, wait_until

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"


def plugin_env(**extra: str) -> dict[str, str]:
    """Environment that "installs" the test plugin (tests/tasks/plugin) into a node process."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(PLUGIN_DIR) + (os.pathsep + path if path else ""), **extra}


class Api:
    def __init__(self, node: NodeProcess, timeout: float = 30) -> None:
        self.node = node
        self.client = httpx.Client(base_url=node.http, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def submit(self, type_: str, payload: str = "", **kw: Any) -> str:
        r = self.client.post("/v1/tasks", json={"type": type_, "payload": payload, **kw})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def submit_batch(self, tasks: list[dict[str, Any]]) -> list[str]:
        r = self.client.post("/v1/tasks/batch", json={"tasks": tasks})
        assert r.status_code == 202, r.text
        return r.json()["ids"]

    def lookup(self, ids: Sequence[str], wait_s: float = 0, results: bool = True) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), 5000):
            r = self.client.post("/v1/tasks/lookup", json={"ids": list(ids[i:i + 5000]), "wait_s": wait_s,
                                                           "results": results},
                                 timeout=wait_s + 30)
            assert r.status_code == 200, r.text
            out.extend(r.json()["tasks"])
        return out

    def wait_all(self, ids: Sequence[str], timeout: float) -> list[dict[str, Any]]:
        """Every task in a final state (bounded), full records."""
        final = ("completed", "failed", "cancelled")
        docs = wait_until(lambda: (lambda d: d if all(x["state"] in final for x in d) else None)(
            self.lookup(ids, wait_s=min(5.0, timeout), results=False)), timeout, f"{len(ids)} tasks to finish",
            interval=0.2)
        assert docs
        return self.lookup(ids)

    def get(self, task_id: str, wait: float = 0) -> dict[str, Any]:
        r = self.client.get(f"/v1/tasks/{task_id}", params={"wait": wait}, timeout=wait + 30)
        assert r.status_code == 200, r.text
        return r.json()

    def ledger(self, verify: bool = False, limit: int = 0) -> dict[str, Any]:
        r = self.client.get("/v1/ledger", params={"verify": verify, "limit": limit})
        assert r.status_code == 200, r.text
        return r.json()

    def status(self) -> dict[str, Any]:
        return self.client.get("/v1/status").json()


def worker_config(boot: NodeProcess, capabilities: Sequence[str] = ("compute", "storage"),
                  **tasks: Any) -> dict[str, Any]:
    return node_config("worker", node={"capabilities": list(capabilities)},
                       network={"bootstrap_peers": [boot.addr()]}, tasks=tasks)


def wait_for_workers(node: NodeProcess, capability: str, n: int, timeout: float = 40) -> None:
    def enough() -> bool:
        r = httpx.get(node.http + "/v1/capabilities", timeout=5).json()
        return len(r["network"].get(capability, [])) >= n

    wait_until(enough, timeout, f"{node.name} to see {n} live {capability} worker(s)")


def ledger_rows(node: NodeProcess, direction: str) -> list[tuple[str, str, str, int]]:
    """(task_id, submitter, worker, amount) straight from a node's SQLite ledger (works on a killed node too)."""
    db = sqlite3.connect(f"file:{node.data_dir / 'tasks.sqlite3'}?mode=ro", uri=True)
    try:
        return list(db.execute("SELECT task_id, submitter, worker, amount FROM ledger WHERE direction=?",
                               (direction,)))
    finally:
        db.close()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("tasks"))
    try:
        yield c
    finally:
        c.close()
