"""A running node seen through its HTTP API, for the console of a second ``p2p-node`` started with the same config.

In a pod, ``echo "task compute x" | p2p-node --config /app/config.yaml`` runs beside the pod's node, whose data dir
(and so identity) is locked. Rather than fail, the second process finds the running node through
``<data_dir>/node.json`` and drives it: same commands, same output, the work done by the real node.

httpx is imported where a request is made, not at module level: every ``p2p-node`` imports this module (for
:class:`RemoteError` and :func:`running_node_url`) and httpx, with the command line it loads (rich, click, pygments),
is about 7 MiB and 0.05 s of CPU that a node never needs (bench/RESULTS.md, "Start-up CPU and RSS").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    import httpx


LONG_POLL_S = 20.0  # below the client's 30 s timeout and the API's own cap


class RemoteError(RuntimeError):
    pass


def running_node_url(data_dir: Path) -> str | None:
    """The HTTP URL of the node holding ``data_dir``, if its runtime file names a live process."""
    try:
        doc = json.loads((Path(data_dir) / "node.json").read_text())
        os.kill(int(doc["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    url = str(doc.get("http") or "")
    return url.replace("://0.0.0.0:", "://127.0.0.1:") or None


class _RemoteTasks:
    def __init__(self, node: "RemoteNode") -> None:
        self.node = node

    async def submit(self, task_type: str, payload: bytes, redundancy: int | None = None) -> str:
        body: dict[str, Any] = {"type": task_type, "payload": payload.decode()}
        if redundancy is not None:
            body["redundancy"] = redundancy
        doc = await self.node.request("POST", "/v1/tasks", json=body)
        return str(doc["id"])

    async def wait(self, task_id: str) -> dict[str, Any]:
        """Long-poll (``?wait=``): the node answers as soon as the task is final, or after ``LONG_POLL_S``."""
        while True:
            doc = await self.node.request("GET", f"/v1/tasks/{task_id}", params={"wait": LONG_POLL_S})
            if doc.get("state") in ("completed", "failed", "cancelled"):
                if "result_text" not in doc:
                    doc["result_text"] = doc.get("result")
                return doc
            await trio.lowlevel.checkpoint()


class RemoteNode:
    """The subset of :class:`~p2p_fast.app.node.Node` the console uses, over HTTP."""

    def __init__(self, base_url: str, status: dict[str, Any], client: httpx.AsyncClient) -> None:
        self.base_url = base_url
        self.client = client
        self.role = status.get("role", "?")
        self.capabilities = list(status.get("capabilities", []))
        self.gossip_listeners: list[Any] = []  # broadcasts are printed by the running node, not here
        self.tasks = _RemoteTasks(self)

    @classmethod
    async def connect(cls, base_url: str, client: httpx.AsyncClient) -> "RemoteNode":
        self = cls(base_url, {}, client)
        status = await self.request("GET", "/v1/status")
        self.role, self.capabilities = status["role"], list(status.get("capabilities", []))
        return self

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        try:
            r = await self.client.request(method, self.base_url + path, **kw)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the running node at {self.base_url}: {exc}") from None
        try:
            doc = r.json()
        except ValueError:
            doc = {"error": r.text.strip()}
        if r.status_code >= 400:
            raise RemoteError(f"{doc.get('error', r.status_code)}" + (f": {doc['detail']}" if doc.get("detail") else ""))
        return doc

    async def ready(self) -> bool:
        import httpx

        try:
            r = await self.client.get(self.base_url + "/readyz")
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def peers(self) -> Any:
        return await self.request("GET", "/v1/peers")

    async def status(self) -> Any:
        return await self.request("GET", "/v1/status")

    async def capability_view(self) -> Any:
        return await self.request("GET", "/v1/capabilities")

    async def publish_text(self, text: str) -> None:
        await self.request("POST", "/v1/gossip", json={"text": text})
