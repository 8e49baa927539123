"""Where a sequential round trip's CPU goes: CPU per round trip of each process of ``bench_fair.py``'s network.

    .venv/bin/python bench/tasks/rt_cpu.py [--seconds 5] [--runs 3]

The same network as ``bench_fair.py`` (1 bootstrap + 3 workers that accept functions, one PSK, the client submitting
to the bootstrap, which cannot run the task), warmed up as it is (a burst, then 200 round trips); then round trips of
``noop`` one after the other for ``--seconds``, through :mod:`p2p_fast.client`. Prints the round trip's p50 / p99 and
each process's CPU (utime + stime from ``/proc``, a node's pool children included) divided by the number of round
trips, and the submitting node's CPU by thread. Why: on this 2-core machine five processes share two cores, so the
CPU a process spends per round trip is both latency on the path and contention for the others.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench_fair import TOKEN, function_network, noop  # noqa: E402
from taskbench import pct  # noqa: E402

from bench.procstat import CLK_TCK, children, thread_ticks, total_ticks  # noqa: E402

def one_run(seconds: float) -> dict[str, object]:
    from p2p_fast.client import Client, gather

    with tempfile.TemporaryDirectory(prefix="rt-cpu-") as tmp:
        net = function_network(Path(tmp), secrets.token_hex(32), 2)
        try:
            with Client(net.http, token=TOKEN) as c:
                gather([c.submit(noop, i) for i in range(300)])
                for i in range(200):
                    assert c.submit(noop, i).result() == i
                nodes = {"submitter": net.boot.proc.pid, **{f"w{i}": w.proc.pid for i, w in enumerate(net.workers)}}
                groups = {name: [pid, *children(pid)] for name, pid in nodes.items()}
                groups["client"] = [os.getpid()]
                before = {name: total_ticks(pids) for name, pids in groups.items()}
                threads_before = thread_ticks(nodes["submitter"])
                lat = []
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    t = time.perf_counter()
                    assert c.submit(noop, 1).result() == 1
                    lat.append((time.perf_counter() - t) * 1000)
                after = {name: total_ticks(pids) for name, pids in groups.items()}
                threads_after = thread_ticks(nodes["submitter"])
        finally:
            net.close()
            os.environ.pop("P2P_PSK", None)
    per_rt = 1000.0 / CLK_TCK / len(lat)  # ms of CPU per round trip, per tick
    return {
        "round_trips": len(lat), "p50_ms": round(pct(lat, 50), 3), "p99_ms": round(pct(lat, 99), 3),
        "cpu_ms_per_rt": {name: round((after[name] - before[name]) * per_rt, 3) for name in groups},
        "submitter_threads_ms_per_rt": {name: round((t - threads_before.get(name, 0)) * per_rt, 3)
                                        for name, t in threads_after.items() if t > threads_before.get(name, 0)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for _ in range(args.runs):
        print(json.dumps(one_run(args.seconds)), flush=True)


if __name__ == "__main__":
    main()
