"""The node's console: commands typed at a terminal or piped in (``echo "task compute x" | p2p-node --config ...``).

Commands run against a :class:`Node` (or anything with the same methods). ``task`` submits and returns at once; the
result is printed when it arrives, and piped input ends only after every submitted task has finished, so a script
gets every result and an exit code that says whether all succeeded.
"""

from __future__ import annotations

import inspect
import json
import shlex
import sys
from typing import Any, Callable, Protocol

import trio

HELP = """commands:
  help                     this list
  peers                    connected peers: ID, address, role, capabilities, RTT
  status                   role, ID, listen addresses, uptime, connections, topics and mesh sizes, DHT, tasks
  capabilities             this node's capabilities, and which live peers offer what
  task <type> <payload>    submit a task; its result is printed when it arrives
  task -r K <type> <payload>  the same, run on K distinct workers: the majority result is accepted
  gossip <text>            broadcast a line of text to every node (printed there as [gossip])
  quit                     stop (piped input stops at its end, after submitted tasks finish)"""


def _fmt_peers(peers: list[dict[str, Any]]) -> str:
    if not peers:
        return "no connected peers"
    lines = [f"{len(peers)} connected peer(s):"]
    for p in peers:
        rtt = f"{p['rtt_ms']:.1f} ms" if p.get("rtt_ms") is not None else "-"
        caps = ",".join(p.get("capabilities") or []) or "-"
        via = " (relayed)" if p.get("relayed") else ""
        lines.append(f"  {p['peer_id']}  {p.get('addr') or '-'}{via}  role={p.get('role', '?')}  caps={caps}  "
                     f"rtt={rtt}")
    return "\n".join(lines)


def _fmt_status(s: dict[str, Any]) -> str:
    lines = [
        f"role:         {s['role']}",
        f"peer id:      {s['peer_id']}",
        f"listening:    {' '.join(s['listen_addrs'])}",
        f"uptime:       {s['uptime_s']:.0f} s",
        f"peers:        {s['peers']} ({s['connections']} connections, {s.get('live_peers', 0)} live in the network)",
        f"dht:          {s['dht']['mode']} mode, {s['dht']['routing_table']} peers in the routing table",
        "topics:       " + (", ".join(f"{t} (mesh {n})" for t, n in sorted(s["topics"].items())) or "-"),
        f"capabilities: {', '.join(s['capabilities']) or '-'}",
        f"ready:        {'yes' if s.get('ready') else 'no'}",
    ]
    if "nat" in s:
        lines.append(f"nat:          {json.dumps(s['nat'], sort_keys=True)}")
    if "tasks" in s:
        lines.append("tasks:        " + ", ".join(f"{k} {v}" for k, v in s["tasks"].items()))
    if "ledger" in s:
        lines.append("ledger:       " + ", ".join(f"{k} {v}" for k, v in s["ledger"].items()))
    return "\n".join(lines)


class ConsoleNode(Protocol):
    """What the console uses: the in-process :class:`~p2p_fast.app.node.Node`, or a
    :class:`~p2p_fast.app.remote.RemoteNode` talking to a running one over HTTP (whose views are coroutines: the
    console awaits a view's value when it is awaitable)."""

    role: str
    gossip_listeners: list[Callable[[str, str, float], None]]
    tasks: Any  # submit(type, payload[, redundancy]) -> id and wait(id) -> record; None when the role runs none

    def ready(self) -> Any: ...

    def peers(self) -> Any: ...

    def status(self) -> Any: ...

    def capability_view(self) -> Any: ...

    async def publish_text(self, text: str) -> None: ...


class Console:
    def __init__(self, node: ConsoleNode, out: Callable[[str], None] | None = None) -> None:
        self.node = node
        self.out = out or (lambda text: print(text, flush=True))
        self.failures = 0
        self.quit_requested = False
        self._nursery: trio.Nursery | None = None

    async def run_lines(self, next_line: Callable[[], Any], wait_ready: float | None = None) -> int:
        """Read lines until EOF or ``quit``; return the exit code (0 when every command and task succeeded)."""
        self.node.gossip_listeners.append(self._on_gossip)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if wait_ready:
                with trio.move_on_after(wait_ready):
                    while not await _value(self.node.ready()):
                        await trio.sleep(0.1)
            while not self.quit_requested:
                line = await next_line()
                if line is None:
                    break
                await self.execute(line)
        return 1 if self.failures else 0

    def _on_gossip(self, sender: str, text: str, _sent_at: float) -> None:
        self.out(f"[gossip] {sender}: {text}")

    async def execute(self, line: str) -> None:
        line = line.strip()
        if not line or line.startswith("#"):
            return
        cmd, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if cmd == "help":
                self.out(HELP)
            elif cmd == "peers":
                self.out(_fmt_peers(await _value(self.node.peers())))
            elif cmd == "status":
                self.out(_fmt_status(await _value(self.node.status())))
            elif cmd == "capabilities":
                await self._capabilities()
            elif cmd == "gossip":
                if not rest:
                    raise ValueError("usage: gossip <text>")
                await self.node.publish_text(rest)
                self.out("gossip sent")
            elif cmd == "task":
                await self._task(rest)
            elif cmd in ("quit", "exit"):
                self.quit_requested = True
            else:
                raise ValueError(f"unknown command {cmd!r}; type 'help' for the list")
        except Exception as exc:
            self.failures += 1
            self.out(f"error: {exc}")

    async def _capabilities(self) -> None:
        view = await _value(self.node.capability_view())
        self.out(f"this node ({self.node.role}): {', '.join(view['node']) or '-'}")
        network: dict[str, list[str]] = view["network"]
        if not network:
            self.out("no live peer has advertised capabilities yet")
        for cap, peers in sorted(network.items()):
            self.out(f"  {cap}: {len(peers)} peer(s)")

    async def _task(self, rest: str) -> None:
        try:
            parts = shlex.split(rest)
        except ValueError as exc:
            raise ValueError(f"cannot parse task arguments: {exc}") from None
        redundancy: int | None = None
        if parts and parts[0] in ("-r", "--redundancy"):
            if len(parts) < 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 16:
                raise ValueError("usage: task -r K <type> <payload>  (K: workers that must agree, 1..16)")
            redundancy, parts = int(parts[1]), parts[2:]
        if not parts:
            raise ValueError("usage: task [-r K] <type> <payload>")
        task_type, payload = parts[0], " ".join(parts[1:])
        if self.node.tasks is None:
            raise ValueError("this node runs no task service")
        if redundancy is None:
            task_id = await self.node.tasks.submit(task_type, payload.encode())
        else:
            task_id = await self.node.tasks.submit(task_type, payload.encode(), redundancy=redundancy)
        self.out(f"task {task_id} submitted ({task_type})")
        assert self._nursery is not None
        self._nursery.start_soon(self._await_task, task_id)

    async def _await_task(self, task_id: str) -> None:
        record = await self.node.tasks.wait(task_id)
        if record.get("state") == "completed":
            self.out(f"task {task_id} completed by {record.get('worker')}: {record.get('result_text')}")
        else:
            self.failures += 1
            self.out(f"task {task_id} {record.get('state')}: {record.get('error')}")


async def _value(result: Any) -> Any:
    """Console commands work against the in-process node (plain values) and a remote one (awaitables)."""
    return await result if inspect.isawaitable(result) else result


async def read_stdin_line() -> str | None:
    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    return line if line else None
