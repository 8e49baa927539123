"""Figures for the node itself: dial time, gossip delivery latency across a local network, idle RSS per node.

    .venv/bin/python bench/node_figures.py [--messages 200 --rate 20 --workers 4]

Dial time: two hosts built exactly as the node builds them (TCP + Noise + Yamux), a fresh dialer each time, median
of N. Latency: 1 bootstrap + N workers as real processes on 127.0.0.1; one worker broadcasts timestamped texts at a
steady rate through ``POST /v1/gossip`` and every other node reports when each arrived (``GET /v1/gossip``).
Idle RSS: VmRSS of each node process after the network has settled. Prints JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from harness import Cluster, node_config, wait_until  # noqa: E402

from bench.procstat import rss_mib  # noqa: E402


async def _dial_times(n: int, tmp: Path) -> list[float]:
    from libp2p.peer.peerinfo import PeerInfo

    from p2p_fast.core.config import load_config_text
    from p2p_fast.stack.host import build_host, listen_addrs
    from p2p_fast.stack.identity import load_or_create_identity

    cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\nnetwork: {security: [noise]}\n")
    server = build_host(cfg, load_or_create_identity(tmp / "server"))
    out = []
    async with server.run(listen_addrs=listen_addrs(cfg)):
        target = PeerInfo(server.get_id(), [server.get_addrs()[0]])
        for i in range(n):
            dialer = build_host(cfg, load_or_create_identity(tmp / f"d{i}"))
            async with dialer.run(listen_addrs=listen_addrs(cfg)):
                start = trio.current_time()
                await dialer.connect(target)
                out.append(trio.current_time() - start)
    return out


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dials", type=int, default=20)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="p2pf-figures-"))

    dials = trio.run(_dial_times, args.dials, tmp)

    cluster = Cluster(tmp / "net")
    try:
        boot = cluster.start("boot", node_config("bootstrap", logging={"level": "warning"}))
        workers = [cluster.start(f"w{i}", node_config("worker", network={"bootstrap_peers": [boot.addr()]},
                                                      logging={"level": "warning"}))
                   for i in range(args.workers)]
        nodes = [boot, *workers]
        for n in nodes:
            wait_until(lambda n=n: n.status()["live_peers"] >= len(nodes) - 1, 60, f"{n.name} to see all")
        time.sleep(5)  # settle: idle means after joins, with heartbeats running
        rss = {n.name: rss_mib(n.proc.pid) for n in nodes}

        sender = workers[0]
        interval = 1.0 / args.rate
        with httpx.Client(timeout=10) as client:
            t0 = time.monotonic()
            for i in range(args.messages):
                client.post(sender.http + "/v1/gossip", json={"text": f"lat-{i}"}).raise_for_status()
                delay = t0 + (i + 1) * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            receivers = [n for n in nodes if n is not sender]
            latencies: list[float] = []
            for n in receivers:
                def all_in(n=n):
                    got = [g for g in client.get(n.http + "/v1/gossip?limit=1000").json()
                           if g["text"].startswith("lat-")]
                    return got if len(got) >= args.messages else None
                got = wait_until(all_in, 60, f"{n.name} to receive every message")
                latencies += [g["received_at"] - g["sent_at"] for g in got]
    finally:
        cluster.close()

    result = {
        "dial_ms": {"median": statistics.median(dials) * 1000, "min": min(dials) * 1000, "max": max(dials) * 1000,
                    "n": len(dials)},
        "gossip_latency_ms": {"p50": _pct(latencies, 0.5) * 1000, "p99": _pct(latencies, 0.99) * 1000,
                              "max": max(latencies) * 1000, "n": len(latencies), "rate_per_s": args.rate,
                              "nodes": len(nodes)},
        "idle_rss_mib": rss,
    }
    print(json.dumps(result, indent=2))
    d, g = result["dial_ms"], result["gossip_latency_ms"]
    print("\n| figure | value |\n| --- | --- |")
    print(f"| dial (TCP+Noise+Yamux), median of {d['n']} | {d['median']:.1f} ms (min {d['min']:.1f}, max {d['max']:.1f}) |")
    print(f"| gossip delivery, {g['nodes']} nodes, {g['rate_per_s']:.0f} msg/s, p50 / p99 | "
          f"{g['p50']:.1f} ms / {g['p99']:.1f} ms ({g['n']} deliveries) |")
    print(f"| idle RSS per node | " + ", ".join(f"{k} {v:.1f} MiB" for k, v in rss.items()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
