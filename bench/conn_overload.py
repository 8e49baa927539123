"""A join storm on one machine: N ``p2p-node`` processes started at once with the shipped role configs (node/*.yaml:
mDNS on, 30 s heartbeats and timeouts), each on 127.0.0.1 with its own data dir, workers bootstrapping from one
bootstrap. After ``--duration`` seconds it counts, over every node's log: ERROR and Traceback lines, Noise
authentication failures (``NoiseInvalidMessage`` / ``InvalidTag``), connections closed by liveness, connection
manager prunes; and the connected peers per node, then stops every node with SIGTERM and counts clean exits.

    .venv/bin/python bench/conn_overload.py --nodes 31 --duration 150 [--src DIR]

``--src`` runs the nodes from another source tree (e.g. ``git archive`` of an older commit, for a before/after).
The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

PATTERNS = {
    "error_lines": re.compile(r" ERROR "),
    "tracebacks": re.compile(r"Traceback \(most recent call last\)"),
    "auth_failures": re.compile(r"^noise\.exceptions\.NoiseInvalidMessage"),  # one per failed connection
    "liveness_closes": re.compile(r"pings? in a row.*closing|closing its connection as unresponsive"),
    "prune_rounds": re.compile(r"connection manager: .* closing"),
}


def role_config(src: Path, role: str, boot_addr: str | None, psk_file: Path) -> dict[str, Any]:
    cfg = yaml.safe_load((src / "node" / f"{role}.yaml").read_text())
    # A private network of its own: mDNS on a shared machine also finds other people's nodes (other test runs),
    # whose faults would otherwise be counted here.
    cfg["network"]["psk_file"] = str(psk_file)
    cfg["node"].update({"listen_host": "127.0.0.1", "listen_port": 0})
    cfg["node"].pop("data_dir", None)
    cfg["http"] = {**cfg.get("http", {}), "listen": "127.0.0.1:0"}
    cfg["network"]["bootstrap_peers"] = [boot_addr] if boot_addr else []
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=31)
    ap.add_argument("--duration", type=float, default=150.0)
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--keep", type=Path, help="put the nodes' directories (logs) here and keep them")
    args = ap.parse_args()
    src = args.src.resolve()
    sys.path.insert(0, str(src / "tests"))
    from harness import Cluster  # noqa: E402  (the source tree's own harness: nodes run from it)

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="conn-overload-") as scratch:
        tmp = str(args.keep) if args.keep else scratch
        psk_file = Path(tmp) / "swarm.key"
        psk_file.parent.mkdir(parents=True, exist_ok=True)
        psk_file.write_text(os.urandom(32).hex() + "\n")
        cluster = Cluster(Path(tmp))
        try:
            boot = cluster.add("boot", role_config(src, "bootstrap", None, psk_file)).start().wait_started(120)
            t0 = time.monotonic()
            workers = [cluster.add(f"w{i}", role_config(src, "worker", boot.addr(), psk_file)).start()
                       for i in range(args.nodes - 1)]
            for w in workers:
                w.wait_started(300)
            nodes = [boot, *workers]
            time_to_ready: float | None = None
            not_ready = list(workers)
            while time.monotonic() - t0 < args.duration:
                still = []
                for n in not_ready:
                    try:
                        if not n.status().get("ready"):
                            still.append(n)
                    except Exception:  # an overloaded node may not answer within the client's timeout
                        still.append(n)
                not_ready = still
                if not not_ready and time_to_ready is None:
                    time_to_ready = time.monotonic() - t0
                time.sleep(1.0)
            peers = []
            for n in nodes:
                try:
                    peers.append(len(n.peers()))
                except Exception:
                    peers.append(-1)
            load_end = os.getloadavg()
            died_early = sum(1 for n in nodes if n.proc is not None and n.proc.poll() is not None)
        finally:
            procs = [n for n in cluster.nodes if n.proc is not None]
            cluster.close(grace=20.0)
        counts = {k: 0 for k in PATTERNS}
        for n in procs:
            text = n.stderr_path.read_text(errors="replace") + "\n".join(n.lines)
            for line in text.splitlines():
                for k, rx in PATTERNS.items():
                    if rx.search(line):
                        counts[k] += 1
        exits = [n.proc.returncode for n in procs if n.proc is not None]
        counts["psk_mismatches_seen"] = sum(
            n.stderr_path.read_text(errors="replace").count("psk") for n in procs)
    peers_sorted = sorted(peers)
    print(json.dumps({
        "nodes": args.nodes, "duration_s": args.duration, "src": str(src),
        "time_to_ready_s": None if time_to_ready is None else round(time_to_ready, 1),
        "not_ready_at_end": len(not_ready),
        "peers_per_node_min_median_max": [peers_sorted[0], peers_sorted[len(peers_sorted) // 2], peers_sorted[-1]],
        **counts,
        "died_before_sigterm": died_early,
        "clean_exits": sum(1 for c in exits if c == 0), "exits": len(exits),
        "load_avg_start": [round(x, 1) for x in load_start], "load_avg_end": [round(x, 1) for x in load_end],
    }))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
