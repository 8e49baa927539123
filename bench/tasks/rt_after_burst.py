"""Sequential round trips through the client right after a burst, and after a pause: does the round trip depend on
what the machine did just before?

Builds the network of ``bench_fair.py`` (1 bootstrap + 3 workers accepting functions), then ``--reps`` times:
``--burst`` no-op functions at once, a pause (the ``--pauses`` in turn), and ``--round-trips`` no-ops one after
the other; prints p50 / p99 / max of each rep and the medians per pause. On a virtual machine whose idle CPUs wake
slowly, the same round trip is longer after a pause than right after the burst.

    python bench/tasks/rt_after_burst.py [--reps 8] [--pauses 0,1] [--burst 5000] [--round-trips 200]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fair import TOKEN, function_network, noop  # noqa: E402
from taskbench import load_average, pct  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--pauses", default="0,1", help="seconds between the burst and the round trips, in turn")
    ap.add_argument("--burst", type=int, default=5000)
    ap.add_argument("--round-trips", type=int, default=200)
    ap.add_argument("--slots", type=int, default=2)
    args = ap.parse_args()
    try:
        pauses = [float(p) for p in args.pauses.split(",")]
    except ValueError:
        ap.error(f"--pauses: {args.pauses!r} is not a comma-separated list of seconds")
    if not pauses or any(p < 0 for p in pauses):
        ap.error(f"--pauses: {args.pauses!r} needs one or more pauses of 0 s or more")
    if args.reps < 1 or args.round_trips < 2 or args.burst < 0:
        ap.error("--reps must be >= 1, --round-trips >= 2, --burst >= 0")
    from p2p_fast.client import Client, gather

    print(f"load {load_average()} at the start", flush=True)
    res: dict[float, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rt-after-burst-") as tmp:
        net = function_network(Path(tmp), secrets.token_hex(32), args.slots)
        try:
            with Client(net.http, token=TOKEN) as c:
                gather([c.submit(noop, i) for i in range(30)])
                for rep in range(args.reps):
                    pause = pauses[rep % len(pauses)]
                    gather([c.submit(noop, i) for i in range(args.burst)])
                    time.sleep(pause)
                    lat = []
                    for i in range(args.round_trips):
                        t = time.perf_counter()
                        assert c.submit(noop, i).result() == i
                        lat.append((time.perf_counter() - t) * 1000)
                    res.setdefault(pause, []).append((pct(lat, 50), pct(lat, 99)))
                    print(f"pause {pause:g} s: p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, "
                          f"max {max(lat):.1f} ms", flush=True)
        finally:
            net.close()
    for pause, v in res.items():
        print(f"pause {pause:g} s, {len(v)} reps: median p50 {statistics.median(x[0] for x in v):.2f} ms, "
              f"median p99 {statistics.median(x[1] for x in v):.2f} ms")
    print(f"load {load_average()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
