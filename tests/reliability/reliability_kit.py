"""Helpers for the reliability tests: an API client (with the bearer token), the exactly-once and ledger checks every
fault test ends with, metric scraping, a small tmpfs, and the figures each test reports.

Figures: :func:`record` prints one ``FIGURES {...}`` line per test and, when ``P2P_FAST_FIGURES`` names a file,
appends it there as JSON (RELIABILITY.md's tables come from such a run).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import pytest

from harness import NodeProcess, wait_until

FINAL = ("completed", "failed", "cancelled")




class _Via:
    """An httpx client whose requests run through ``via`` (e.g. a test-bed host's ``call``: into its namespace)."""

    def __init__(self, client: httpx.Client, via: Any) -> None:
        self._client = client
        self._via = via

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self._via(lambda: self._client.request(method, url, **kw))

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def close(self) -> None:
        self._client.close()


class Api:
    """The task API of one node (``token``: sent as a bearer token); reached through the node's ``via``."""

    def __init__(self, node: NodeProcess, token: str | None = None, timeout: float = 30) -> None:
        self.node = node
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = _Via(httpx.Client(base_url=node.http, timeout=timeout, headers=headers), node.via)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def submit_batch(self, tasks: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        for i in range(0, len(tasks), 5000):
            r = self.client.post("/v1/tasks/batch", json={"tasks": tasks[i:i + 5000]})
            assert r.status_code == 202, r.text
            ids.extend(r.json()["ids"])
        return ids

    def lookup(self, ids: Sequence[str], wait_s: float = 0, results: bool = True) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), 5000):
            r = self.client.post("/v1/tasks/lookup", json={"ids": list(ids[i:i + 5000]), "wait_s": wait_s,
                                                           "results": results}, timeout=wait_s + 30)
            assert r.status_code == 200, r.text
            out.extend(r.json()["tasks"])
        return out

    def wait_all(self, ids: Sequence[str], timeout: float) -> list[dict[str, Any]]:
        """Every task final (bounded wait); then their full records."""
        def done() -> bool:
            docs = self.lookup(ids, wait_s=min(3.0, timeout), results=False)
            return all(d["state"] in FINAL for d in docs)

        wait_until(done, timeout, f"{len(ids)} tasks on {self.node.name} to reach a final state", interval=0.2)
        return self.lookup(ids)

    def completed(self) -> int:
        return int(self.client.get("/v1/status").json()["tasks"]["completed"])

    def ledger(self, verify: bool = False) -> dict[str, Any]:
        r = self.client.get("/v1/ledger", params={"verify": verify, "limit": 0})
        assert r.status_code == 200, r.text
        return r.json()

    def metrics(self) -> str:
        return self.client.get("/metrics").text


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none)."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.e+-]+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def ledger_rows(node: NodeProcess, direction: str) -> list[tuple[str, str, str, int]]:
    """(task_id, submitter, worker, amount) straight from a node's SQLite ledger (a killed node's too)."""
    path = node.data_dir / "tasks.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(db.execute("SELECT task_id, submitter, worker, amount FROM ledger WHERE direction=?",
                               (direction,)))
    finally:
        db.close()


def journal_ok(node: NodeProcess) -> bool:
    db = sqlite3.connect(f"file:{node.data_dir / 'tasks.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


def check_exactly_once(docs: list[dict[str, Any]], submitter: NodeProcess, workers: Sequence[NodeProcess],
                       receipts_timeout: float = 20) -> dict[str, int]:
    """The promise every fault test ends with: each task completed exactly once or failed with its reasons, and
    the ledger consistent. Returns the figures (completed, failed, lost, paid)."""
    states = Counter(d["state"] for d in docs)
    lost = [d["id"] for d in docs if d["state"] not in FINAL]
    assert not lost, f"{len(lost)} task(s) not final: {lost[:5]}"
    for d in docs:
        if d["state"] == "completed":
            assert d["attempts"] and d["attempts"][-1]["outcome"] == "ok", d
            assert sum(1 for a in d["attempts"] if a["outcome"] == "ok") == 1, d
        elif d["state"] == "failed":
            assert d["error"], d  # failed with its reasons
    ids = {d["id"] for d in docs}
    completed = {d["id"]: d for d in docs if d["state"] == "completed"}
    # The submitter paid every completed task once, to the worker that delivered it, and nothing else.
    spent = [r for r in ledger_rows(submitter, "spent") if r[0] in ids]
    assert len(spent) == len({r[0] for r in spent}), "a task was paid twice"
    assert {r[0] for r in spent} == set(completed), "paid tasks differ from completed tasks"
    by_task = {r[0]: r for r in spent}
    for tid, d in completed.items():
        assert by_task[tid][2] == d["worker"], (tid, by_task[tid], d["worker"])
    # Workers: every credit matches a payment (same worker, same amount), none twice. Receipts to live workers
    # arrive; a worker that is dead for good keeps only what reached it before.
    live = [w for w in workers if w.proc is not None and w.proc.poll() is None]
    expect_live = sum(1 for r in spent if r[2] in {w.peer_id for w in live})

    def earned() -> list[tuple[str, str, str, int]]:
        return [r for w in workers for r in ledger_rows(w, "earned") if r[0] in ids]

    def per_worker() -> str:
        got = Counter(r[2] for r in earned())
        paid = Counter(r[2] for r in spent)
        return "; ".join(f"{w.name}: paid {paid[w.peer_id]}, credited {got[w.peer_id]}"
                         + ("" if w in live else " (dead)") for w in workers)

    wait_for(lambda: sum(1 for r in earned() if r[2] in {w.peer_id for w in live}) >= expect_live,
             receipts_timeout, "receipts to reach the live workers", dump=per_worker)
    rows = earned()
    assert len(rows) == len({r[0] for r in rows}), "a task was credited twice"
    for r in rows:
        assert r[0] in by_task and by_task[r[0]][2] == r[2] and by_task[r[0]][3] == r[3], r
    return {"tasks": len(docs), "completed": states.get("completed", 0), "failed": states.get("failed", 0),
            "lost": len(lost), "paid": len(spent), "credited": len(rows)}


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``16m``) mounted at ``path`` for the block; unmounted after (lazily if busy)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "p2pf-test", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path, name: str = "filler") -> int:
    """Write zeros into ``directory/name`` until the file system is full; return the bytes written."""
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT, 0o644)
    written = 0
    try:
        while True:
            written += os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    try:
        while True:  # the last few blocks
            written += os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
    return written


def wait_for(predicate: Any, timeout: float, what: str, dump: Any = None, interval: float = 0.2) -> Any:
    """``wait_until``, and on timeout the tail of ``dump()`` (a node's log, say) in the error."""
    try:
        return wait_until(predicate, timeout, what, interval=interval)
    except TimeoutError as exc:
        if dump is None:
            raise
        raise TimeoutError(f"{exc}\n--- {what}: log tail ---\n{str(dump())[-3000:]}") from None
