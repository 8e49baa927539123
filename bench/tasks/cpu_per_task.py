"""Where the CPU of a no-op function task goes: CPU time per task of every process of the network, summed.

Builds the network of ``bench_fair.py`` (1 bootstrap + 3 workers accepting functions, one PSK), submits ``--tasks``
no-op functions at once through :mod:`p2p_fast.client` ``--batches`` times, and reads ``/proc/<pid>/stat``
(utime + stime) of the client (this process), the bootstrap, each worker and each worker's pool children before and
after. With ``--py-spy DIR`` it also records a py-spy profile (``--format raw``, collapsed stacks) of the bootstrap
and of worker 0 during the batches, to see which functions the CPU goes to.

    python bench/tasks/cpu_per_task.py [--tasks 3000] [--batches 3] [--slots 2] [--py-spy /tmp/prof]

A measurement tool, not a benchmark with a table: on a shared machine give the load average with its figures.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fair import TOKEN, function_network, noop  # noqa: E402
from taskbench import load_average  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--py-spy", help="record py-spy profiles of the bootstrap and worker 0 into this directory")
    args = ap.parse_args()
    from p2p_fast.client import Client, gather

    with tempfile.TemporaryDirectory(prefix="cpu-per-task-") as tmp:
        net = function_network(Path(tmp), secrets.token_hex(32), args.slots)
        try:
            with Client(net.http, token=TOKEN) as c:
                gather([c.submit(noop, i) for i in range(300)])  # warm-up: pool children started, links open
                procs = {"client": os.getpid(), "bootstrap": net.boot.proc.pid}
                for i, w in enumerate(net.workers):
                    procs[f"worker{i}"] = w.proc.pid
                    for j, k in enumerate(children(w.proc.pid)):
                        procs[f"worker{i}.child{j}"] = k
                spies = []
                if args.py_spy:
                    Path(args.py_spy).mkdir(parents=True, exist_ok=True)
                    for name in ("bootstrap", "worker0"):
                        spies.append(subprocess.Popen(
                            ["py-spy", "record", "--pid", str(procs[name]), "--rate", "200", "--format", "raw",
                             "--output", str(Path(args.py_spy) / f"{name}.txt"), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    time.sleep(1.0)
                load = load_average()
                before = {k: cpu_s(p) for k, p in procs.items()}
                t = time.perf_counter()
                for _ in range(args.batches):
                    assert gather([c.submit(noop, i) for i in range(args.tasks)]) == list(range(args.tasks))
                wall = time.perf_counter() - t
                after = {k: cpu_s(p) for k, p in procs.items()}
                for s in spies:
                    s.send_signal(2)
                for s in spies:
                    s.wait(30)
        finally:
            net.close()
    n = args.tasks * args.batches
    per = {k: (after[k] - before[k]) / n * 1e6 for k in procs}
    print(f"{n} no-op functions through the client in {args.batches} batches: {n / wall:.0f} tasks/s; "
          f"load {load} at the start, {load_average()} at the end")
    print(f"CPU per task, all processes: {sum(per.values()):.0f} µs")
    for k, v in per.items():
        print(f"  {k:18s} {v:7.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
