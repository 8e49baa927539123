#!/usr/bin/env python3
"""Soak: a steady task rate through a small network of real node processes for a bounded time, with a random worker
killed (SIGKILL) and restarted periodically. At the end: no task lost, every task completed exactly once (or failed
with its reasons), the ledger consistent, and the long-lived nodes' memory (RSS) and open file descriptors flat.

    python scripts/soak.py                          # 30 minutes, 20 tasks/s, a kill every 60 s (RELIABILITY.md)
    python scripts/soak.py --duration 45 --kill-every 12 --json out.json   # the CI version (tests/reliability)

Network on 127.0.0.1: a bootstrap, a submitter (no task capability: every task crosses the network) and
``--workers`` workers. Every loop is bounded by ``--duration``; every wait has a deadline; every process is stopped
at the end, also on failure or Ctrl-C. Exit code 0 when every check passed, 1 otherwise; the figures are printed
(and written as JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "tests", ROOT / "tests" / "reliability"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from harness import Cluster, NodeProcess, node_config, wait_until  # noqa: E402
from reliability_kit import Api, check_exactly_once  # noqa: E402


def proc_figures(node: NodeProcess) -> tuple[float, int]:
    """(RSS in MiB, open file descriptors) of a node process."""
    assert node.proc is not None
    pid = node.proc.pid
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / var * 3600


def live_workers(node: NodeProcess) -> set[str]:
    return set(node.get("/v1/capabilities")["network"].get("compute", []))


def task_batch(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [{"type": "sleep", "payload": "0.05", "timeout_s": 5, "max_retries": 8} if rng.random() < 0.2 else
            {"type": "echo", "payload": f"soak-{rng.getrandbits(32):08x}", "max_retries": 8} for _ in range(n)]


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    cluster = Cluster(workdir)
    figures: dict[str, Any] = {"duration_s": args.duration, "rate": args.rate, "workers": args.workers,
                               "seed": args.seed}
    try:
        boot = cluster.start("boot", node_config("bootstrap"))
        entry = {"bootstrap_peers": [boot.addr()]}
        procs = [cluster.add("sub", node_config("worker", node={"capabilities": []}, network=entry)).start()]
        procs += [cluster.add(f"w{i}", node_config("worker", node={"capabilities": ["compute"]}, network=entry,
                                                   tasks={"slots": 2})).start() for i in range(args.workers)]
        sub, *workers = [p.wait_started() for p in procs]
        wait_until(lambda: len(live_workers(sub)) == args.workers, 60, f"the submitter to see {args.workers} workers")
        watched = {"boot": boot, "sub": sub}
        samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in watched}
        ids: list[str] = []
        kills: list[dict[str, Any]] = []
        down: list[tuple[float, NodeProcess]] = []  # (restart at, worker)
        api = Api(sub)
        t0 = time.monotonic()
        next_kill = t0 + args.kill_every
        next_sample = t0
        second = 0
        try:
            while True:
                now = time.monotonic()
                # Past --duration, go on (at most --max-overrun more) until --min-kills kills have happened: on a
                # loaded machine a restart can take long enough to leave the run short of faults.
                if now - t0 >= args.duration and (len(kills) >= args.min_kills
                                                  or now - t0 >= args.duration + args.max_overrun):
                    break
                # One batch a second: a steady rate, whatever else happens.
                if now >= t0 + second:
                    ids += api.submit_batch(task_batch(rng, args.rate))
                    second += 1
                if now >= next_kill:
                    alive = [w for w in workers if w.proc is not None and w.proc.poll() is None]
                    if len(alive) > 1:
                        victim = rng.choice(alive)
                        victim.kill9()
                        kills.append({"at_s": round(now - t0, 1), "worker": victim.name, "tasks_so_far": len(ids)})
                        down.append((now + args.restart_after, victim))
                    next_kill = now + args.kill_every
                for when, w in list(down):
                    if now >= when:
                        down.remove((when, w))
                        w.start().wait_started()
                if now >= next_sample:
                    for name, node in watched.items():
                        rss, fds = proc_figures(node)
                        samples[name].append((now - t0, rss, fds))
                    next_sample = now + args.sample_every
                time.sleep(0.05)
            for _, w in down:
                w.start().wait_started()
            submitted_s = time.monotonic() - t0
            docs = api.wait_all(ids, timeout=args.drain_timeout)
            ledger_figures = check_exactly_once(docs, sub, workers, receipts_timeout=60)
            assert api.ledger(verify=True)["verification"]["bad"] == 0, "a ledger entry's signature does not verify"
            for name, node in watched.items():
                rss, fds = proc_figures(node)
                samples[name].append((time.monotonic() - t0, rss, fds))
        finally:
            api.close()
        figures.update(ledger_figures)
        figures.update({"submitted": len(ids), "kills": len(kills), "kill_log": kills,
                        "submit_seconds": round(submitted_s, 1),
                        "tasks_per_s": round(len(ids) / max(submitted_s, 1e-9), 1)})
        # Flatness: after a warm-up third, RSS must not keep growing and descriptors must not leak.
        figures["resources"] = {}
        problems = []
        for name, pts in samples.items():
            warm = [p for p in pts if p[0] >= args.duration / 3] or pts
            rss_first, rss_last = warm[0][1], warm[-1][1]
            fds_first, fds_last = warm[0][2], warm[-1][2]
            doc = {"rss_mib_start": round(pts[0][1], 1), "rss_mib_after_warmup": round(rss_first, 1),
                   "rss_mib_end": round(rss_last, 1), "rss_mib_max": round(max(p[1] for p in pts), 1),
                   "rss_slope_mib_per_h_after_warmup": round(slope_per_hour([(t, r) for t, r, _ in warm]), 1),
                   "fds_start": pts[0][2], "fds_after_warmup": fds_first, "fds_end": fds_last,
                   "fds_max": max(p[2] for p in pts), "samples": len(pts),
                   # RSS at each tenth of the run: shows whether growth levels off (bounded caches fill) or not
                   "rss_mib_by_tenth": [round(min(pts, key=lambda p: abs(p[0] - args.duration * k / 10))[1], 1)
                                        for k in range(11)]}
            figures["resources"][name] = doc
            if rss_last - rss_first > args.max_rss_growth_mib:
                problems.append(f"{name}: RSS grew {rss_last - rss_first:.1f} MiB after the warm-up")
            if fds_last - fds_first > args.max_fd_growth:
                problems.append(f"{name}: open descriptors grew from {fds_first} to {fds_last}")
        figures["problems"] = problems
        return figures
    finally:
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=1800, help="seconds of steady load (default 1800)")
    p.add_argument("--rate", type=int, default=20, help="tasks submitted per second (default 20)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--kill-every", type=float, default=60, help="seconds between worker kills (default 60)")
    p.add_argument("--min-kills", type=int, default=0,
                   help="keep the load on past --duration until this many kills have happened (default 0)")
    p.add_argument("--max-overrun", type=float, default=120,
                   help="seconds past --duration the run may go on for --min-kills (default 120)")
    p.add_argument("--restart-after", type=float, default=5, help="seconds a killed worker stays down")
    p.add_argument("--sample-every", type=float, default=10, help="seconds between RSS/fd samples")
    p.add_argument("--drain-timeout", type=float, default=180, help="seconds to wait for the last tasks")
    p.add_argument("--max-rss-growth-mib", type=float, default=40.0)
    p.add_argument("--max-fd-growth", type=int, default=8)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--workdir", type=Path, help="keep node logs and data here (default: a temporary directory)")
    p.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = p.parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        figures = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="p2p-soak-") as d:
            figures = run(args, Path(d))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    ok = figures.get("lost") == 0 and not figures["problems"] and figures["completed"] + figures["failed"] == \
        figures["submitted"]
    print("soak:", "OK" if ok else "FAILED", "-", figures["submitted"], "tasks,", figures["kills"], "kills,",
          figures["lost"], "lost", *(["; " + "; ".join(figures["problems"])] if figures["problems"] else []))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
