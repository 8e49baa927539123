"""The local network behind ./run.sh: real p2p-node processes on 127.0.0.1 (1 bootstrap, 1 relay, ``--workers``
workers), their logs under run/<name>/.

It waits until every node sees every other, prints the network, then runs the task demo through the last worker's
HTTP task API (``POST /v1/tasks``, then ``GET /v1/tasks/{id}`` until each is final: two echoes and a compute) and
exits 1 if any of them failed. Unless ``--once``, the network keeps running with a batch of demo tasks every 5 s
(``POST /v1/tasks/batch``; ``--quiet`` sends none) until Ctrl-C or a node exits.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "run"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: Any = None, timeout: float = 5.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Proc:
    def __init__(self, name: str, role: str, port: int, bootstrap: list[str], relay: list[str]) -> None:
        self.name, self.role = name, role
        self.dir = RUN / name
        self.dir.mkdir(parents=True, exist_ok=True)
        base = yaml.safe_load((ROOT / "node" / f"{role}.yaml").read_text())
        base["node"].update({"listen_port": port, "listen_host": "127.0.0.1", "data_dir": str(self.dir / "data"),
                             "heartbeat_interval": 2})
        base["network"].update({"bootstrap_peers": bootstrap, "enable_mdns": False})
        if relay:
            base["network"]["relay_addrs"] = relay
        base["http"] = {"listen": f"127.0.0.1:{free_port()}"}
        self.config = self.dir / "config.yaml"
        self.config.write_text(yaml.safe_dump(base))
        self.http = "http://" + base["http"]["listen"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.dir / "node.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "p2p_fast", "--config", str(self.config), "--console", "off"],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)

    def status(self) -> dict[str, Any] | None:
        try:
            return http_json(self.http + "/v1/status", timeout=2)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(what: str, check, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"run.sh: timed out after {timeout:.0f}s waiting for {what}; see the logs under {RUN}/")


def show_network(nodes: list[Proc]) -> None:
    print(f"\n{'node':10} {'role':10} {'peer id':54} {'peers':>5} {'live':>5} {'dht':>4}  http")
    for n in nodes:
        s = n.status() or {}
        print(f"{n.name:10} {n.role:10} {s.get('peer_id', '?'):54} {s.get('peers', '?'):>5} "
              f"{s.get('live_peers', '?'):>5} {s.get('dht', {}).get('routing_table', '?'):>4}  {n.http}")


def run_tasks(entry: Proc) -> bool:
    """Submit a few tasks through one node's task API and print their results; False if any failed (an API error
    such as a 404 or 401 propagates: the demo is part of what ``./run.sh --once`` checks)."""
    jobs = [("echo", "hello p2p-fast"), ("compute", "test_payload"), ("echo", "bye")]
    ids = []
    for kind, payload in jobs:
        doc = http_json(entry.http + "/v1/tasks", {"type": kind, "payload": payload})
        ids.append(doc["id"])
        print(f"submitted {kind:8} {payload!r:20} -> task {doc['id']}")
    ok = True
    for task_id in ids:
        rec = wait_for(f"task {task_id}", lambda: (lambda r: r if r["state"] in ("completed", "failed") else None)(
            http_json(f"{entry.http}/v1/tasks/{task_id}")), 60)
        result = rec.get("result") if rec["state"] == "completed" else rec.get("error")
        print(f"task {task_id}: {rec['state']} on {rec.get('worker')}: {str(result)[:100]}")
        ok = ok and rec["state"] == "completed"
    return ok


def keep_tasks_flowing(entry: Proc, every: float = 5.0) -> None:
    """A small batch of tasks every ``every`` seconds, so the dashboard has something moving (``--quiet`` stops it).
    A failed submission is reported once and the trickle goes on (a node may be restarting)."""
    n = 0
    while True:
        time.sleep(every)
        n += 1
        batch = [{"type": "compute", "payload": f"sha256 {20000 * (1 + i % 4)} demo-{n}-{i}"} for i in range(6)]
        batch += [{"type": "echo", "payload": f"demo-{n}-{i}"} for i in range(10)]
        try:
            http_json(entry.http + "/v1/tasks/batch", {"tasks": batch})
        except (urllib.error.URLError, OSError) as exc:
            print(f"demo tasks: submission failed ({exc}); trying again in {every:g} s", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description="Run a local p2p-fast network on 127.0.0.1.")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--once", action="store_true", help="run the demo, then stop everything and exit")
    ap.add_argument("--quiet", action="store_true", help="no demo tasks every 5 s while the network runs")
    args = ap.parse_args()
    RUN.mkdir(exist_ok=True)
    boot_port, relay_port = free_port(), free_port()
    boot = Proc("bootstrap", "bootstrap", boot_port, [], [])
    nodes = [boot]
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        boot.start()
        boot_id = wait_for("the bootstrap node", lambda: (boot.status() or {}).get("peer_id"), 60)
        boot_addr = f"/ip4/127.0.0.1/tcp/{boot_port}/p2p/{boot_id}"
        relay = Proc("relay", "relay", relay_port, [boot_addr], [])
        relay.start()
        nodes.append(relay)
        relay_id = wait_for("the relay node", lambda: (relay.status() or {}).get("peer_id"), 60)
        relay_addr = f"/ip4/127.0.0.1/tcp/{relay_port}/p2p/{relay_id}"
        for i in range(args.workers):
            w = Proc(f"worker{i + 1}", "worker", 0, [boot_addr], [relay_addr])
            w.start()
            nodes.append(w)
        expected = len(nodes) - 1
        print(f"started {len(nodes)} nodes; waiting until every node sees the other {expected} ...")
        wait_for("every node to see every other", lambda: all(
            (n.status() or {}).get("live_peers", 0) >= expected for n in nodes), 90)
        # ... and to hold direct connections beyond the bootstrap (the connector dials announced peers).
        wait_for("the nodes to connect to each other", lambda: all(
            (n.status() or {}).get("peers", 0) >= min(3, expected) for n in nodes), 60)
        show_network(nodes)
        print(f"\ndashboard: {nodes[-1].http}/ui")
        ok = run_tasks(nodes[-1])
        if args.once:
            return 0 if ok else 1
        print(f"\nnetwork running; logs in {RUN}/<node>/node.log; try: curl {nodes[-1].http}/v1/peers")
        print(f"\ndashboard: {nodes[-1].http}/ui   (open it in a browser: the network, tasks as they run, workers,"
              " traffic; every node serves its own at /ui)")
        if not args.quiet:
            import threading

            threading.Thread(target=keep_tasks_flowing, args=(nodes[-1],), daemon=True).start()
            print(f"a batch of 16 demo tasks goes to {nodes[-1].name} every 5 s (--quiet: none)")
        print("Ctrl-C to stop")
        while all(n.proc and n.proc.poll() is None for n in nodes):
            time.sleep(1)
        dead = [n.name for n in nodes if n.proc and n.proc.poll() is not None]
        print(f"node(s) exited: {', '.join(dead)}; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...")
        return 0
    finally:
        for n in reversed(nodes):
            n.stop()
        print("all nodes stopped")


if __name__ == "__main__":
    sys.exit(main())
