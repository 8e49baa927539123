"""Idle CPU of one node against the number of peers it is connected to: the cost of a connection, apart from the
node's fixed cost.

    .venv/bin/python bench/scale/idle_per_conn.py --peers 4 16 32 [--runs 1 --settle 60 --window 60]
        [--set network.conn_low=64 --set network.conn_high=96 ...]

For each P: a bootstrap, the measured worker M (``node/worker.yaml``) joining it, then P workers joining M, all on
127.0.0.1 with the role configs' settings plus ``--set``. Once M has P + 1 peers and ``--settle`` seconds have passed,
M's CPU (utime + stime from /proc) is read over ``--window`` seconds, with nothing asked of any node meanwhile. The
least-squares line through the (peers, CPU) points gives the cost per connection (slope) and the node's fixed
cost (intercept), in ms of CPU per second; the same fit over M's RSS at the end of the window gives the memory of a
connection. M's connections must stay up: raise the connection manager's watermarks
with ``--set`` where the code has one (it would prune M above ``conn_high``).

The scale benchmark's idle figure mixes both costs and whatever start-up work is left in its window; this one keeps
the same node, the same roles and the same quiet window, and varies only P.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from harness import Cluster, NodeProcess, wait_until  # noqa: E402

from bench.procstat import cpu_s, rss_mib  # noqa: E402

FLAGS = ["--listen-host", "127.0.0.1", "--listen-port", "0", "--http-listen", "127.0.0.1:0", "--console", "off"]


def _config(role: str, settings: dict[str, Any]) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "node" / f"{role}.yaml").read_text())
    for dotted, value in settings.items():
        section, _, key = dotted.partition(".")
        config.setdefault(section, {})[key] = value
    return config


def _peer_count(node: NodeProcess) -> int:
    via = getattr(node, "via", lambda call: call())  # (older harnesses, when measuring an older tree, have none)
    try:
        return len(via(lambda: httpx.get(node.http + "/v1/peers", timeout=10)).json())
    except (httpx.HTTPError, ValueError):
        return -1


def run_one(workdir: Path, peers: int, settle: float, window: float, settings: dict[str, Any]) -> dict[str, Any]:
    cluster = Cluster(workdir)
    try:
        boot = cluster.add("bootstrap", _config("bootstrap", settings), extra_args=FLAGS).start()
        boot.wait_started(60)
        measured = cluster.add("m", _config("worker", settings),
                               extra_args=FLAGS + ["--bootstrap", boot.addr()]).start()
        measured.wait_started(60)
        others = [cluster.add(f"p{i:02d}", _config("worker", settings),
                              extra_args=FLAGS + ["--bootstrap", measured.addr()]).start() for i in range(peers)]
        for node in others:
            node.wait_started(120)
        wait_until(lambda: _peer_count(measured) >= peers + 1, 180, f"the measured node to have {peers + 1} peers")
        time.sleep(settle)
        before = _peer_count(measured)
        assert measured.proc is not None
        pid = measured.proc.pid
        c0, t0 = cpu_s(pid), time.monotonic()
        time.sleep(window)
        c1, t1 = cpu_s(pid), time.monotonic()
        after = _peer_count(measured)  # (M's first /v1 request was before the window: its API is built in both)
        return {"peers_asked": peers + 1, "peers_before": before, "peers_after": after,
                "cpu_ms_per_s": round(1000 * (c1 - c0) / (t1 - t0), 3), "rss_mib": round(rss_mib(pid), 1),
                "load": round(os.getloadavg()[0], 1)}
    finally:
        cluster.close()


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else float("nan")
    return slope, my - slope * mx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, nargs="+", default=[4, 16, 32])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--settle", type=float, default=60.0, help="seconds after M has every peer, before the window")
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=YAML",
                    help="a config value for every node, e.g. network.conn_high=96")
    args = ap.parse_args()
    if len(set(args.peers)) < 2:
        ap.error("--peers needs at least two different counts to tell the per-connection cost from the fixed one")
    settings: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            ap.error(f"--set wants SECTION.KEY=VALUE, got {item!r}")
        settings[key] = yaml.safe_load(value)
    rows = []
    for run in range(args.runs):
        for peers in args.peers:
            with tempfile.TemporaryDirectory(prefix="p2p-idle-") as tmp:
                row = {"run": run + 1, **run_one(Path(tmp), peers, args.settle, args.window, settings)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    points = [(float(r["peers_before"]), r["cpu_ms_per_s"]) for r in rows if r["peers_before"] > 0]
    slope, intercept = fit(points)
    rss_slope, rss_intercept = fit([(float(r["peers_before"]), r["rss_mib"]) for r in rows if r["peers_before"] > 0])
    print(json.dumps({"per_connection_ms_per_s": round(slope, 3), "fixed_ms_per_s": round(intercept, 3),
                      "rss_per_connection_kib": round(rss_slope * 1024, 1), "rss_fixed_mib": round(rss_intercept, 1),
                      "points": len(points)}))


if __name__ == "__main__":
    main()
