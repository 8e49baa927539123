"""Waiting for tasks to finish: the node's event stream first, long polls for the rest, a progress bar for many."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx

from p2p_fast.app.ctl.client import Client, CtlError

FINAL = ("completed", "failed", "cancelled")


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total = total
        self.width = width
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_plain = -1.0

    def update(self, done: int, failed: int, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(frac * self.width) + "." * (self.width - int(frac * self.width))
        line = (f"[{bar}] {done}/{self.total} done" + (f", {failed} failed" if failed else "")
                + f"  {done / elapsed:.0f} tasks/s  {elapsed:.1f} s")
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or elapsed - self.last_plain >= 2:
            self.last_plain = elapsed
            print(line, file=sys.stderr, flush=True)


def _final_states(client: Client, ids: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), 5000):
        out += client.call("POST", "/v1/tasks/lookup", json={"ids": ids[i:i + 5000], "results": False})["tasks"]
    return [d for d in out if d["state"] in FINAL or d["state"] == "unknown"]


def _watch_stream(client: Client, docs: dict[str, dict[str, Any]], pending: set[str], bar: Progress | None,
                  deadline: float) -> None:
    """Completions pushed by ``GET /v1/events``: subscribe first, then look up what finished before, then follow.
    Returns when all are final, the deadline passed, or the stream is gone (the caller long-polls the rest)."""
    try:
        with client.http.stream("GET", "/v1/events", params={"types": "task"},
                                timeout=httpx.Timeout(10.0, read=20.0)) as resp:
            if resp.status_code != 200:
                return
            lines = resp.iter_lines()
            event = data = ""
            subscribed = False
            for line in lines:
                if time.monotonic() > deadline:
                    return
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and event:
                    if event == "hello" and not subscribed:
                        subscribed = True
                        found = _final_states(client, sorted(pending))
                    elif event == "task":
                        d = json.loads(data)
                        found = [d] if d.get("event") in FINAL and d.get("id") in pending else []
                    else:
                        return  # overflow: the rest by lookups
                    for d in found:
                        docs[d["id"]] = d
                        pending.discard(d["id"])
                    if found and bar is not None:
                        bar.update(len(docs), sum(1 for x in docs.values() if x["state"] != "completed"),
                                   final=not pending)
                    if not pending:
                        return
                    event = data = ""
    except (httpx.HTTPError, ValueError):
        return  # the node went away or the stream broke: long polls take over


def watch(client: Client, ids: list[str], timeout: float, quiet: bool = False) -> list[dict[str, Any]]:
    """Wait until every task is final (or ``timeout``), with a progress bar for more than one task. Completions come
    from the node's event stream; long polls finish the job where there is none (an older node, a restart)."""
    docs: dict[str, dict[str, Any]] = {}
    bar = Progress(len(ids)) if len(ids) > 1 and not quiet else None
    deadline = time.monotonic() + timeout
    left = set(ids)
    _watch_stream(client, docs, left, bar, deadline)
    pending = [i for i in ids if i in left]
    while pending and time.monotonic() < deadline:
        wait = min(1.0, max(0.0, deadline - time.monotonic()))
        found = []
        for i in range(0, len(pending), 5000):
            chunk = pending[i:i + 5000]
            found += client.call("POST", "/v1/tasks/lookup", json={"ids": chunk, "wait_s": wait, "results": False},
                                 timeout=wait + 30)["tasks"]
        for d in found:
            if d["state"] in FINAL or d["state"] == "unknown":
                docs[d["id"]] = d
        pending = [i for i in pending if i not in docs]
        if bar is not None:
            bar.update(len(docs), sum(1 for d in docs.values() if d["state"] != "completed"), final=not pending)
    if pending:
        raise CtlError(f"{len(pending)} task(s) not finished after {timeout:g} s (first: {pending[0]})")
    if len(ids) <= 100:  # full records (results) for a handful
        full = client.call("POST", "/v1/tasks/lookup", json={"ids": ids, "results": True})["tasks"]
        return list(full)
    return [docs[i] for i in ids]
