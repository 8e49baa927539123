"""Where the CPU of a function task goes: CPU time per task of every process of the network, summed.

Builds the network of ``bench_fair.py`` (1 bootstrap + 3 workers accepting functions, one PSK), submits ``--tasks``
no-op functions at once ``--batches`` times, through :mod:`p2p_fast.client` to the bootstrap (``--via client``) or
from a capability-less node in a process of its own (``--via embedded``, as ``bench_fair.py`` does), and reads
``/proc/<pid>/stat`` (utime + stime) of the submitting process, the bootstrap, each worker and each worker's pool
children before and after. With ``--py-spy DIR`` it also records a py-spy profile (``--format raw``, collapsed
stacks) of the submitting node (the bootstrap, or the embedded node) and of worker 0 during the batches.

``--hash-rounds N`` (or ``--hash-rounds 50ms``: calibrated as ``bench_fair.py`` does) runs ``bench_fair.hash_work``
instead of the no-op: the CPU-bound workload (c), where the question is how much CPU the nodes take beside the
functions. ``--engine ray`` runs the same tasks on Ray (``num_cpus=3``, as in ``bench_fair.py``) and reports the CPU
of the driver and of each of its descendant processes, so the two engines' overhead compare in the same terms. Both
report the machine's idle share over the batches (``/proc/stat``): near 0 means the CPUs were saturated.

    python bench/tasks/cpu_per_task.py [--via client|embedded] [--engine p2p-fast|ray] [--tasks 3000]
        [--batches 3] [--slots 2] [--hash-rounds N|50ms] [--py-spy DIR]

A measurement tool, not a benchmark with a table: on a shared machine give the load average with its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench_fair import TOKEN, calibrate, function_network, hash_work, noop  # noqa: E402
from taskbench import load_average  # noqa: E402

from bench import procstat  # noqa: E402
from bench.procstat import children, descendants, idle_share, idle_ticks, program  # noqa: E402

def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 when it is gone)."""
    try:
        return procstat.cpu_s(pid)
    except OSError:
        return 0.0


def pool_counters(http: str) -> tuple[float, float]:
    """(batches, requests in them) a worker handed its pool children so far (its /metrics)."""
    import httpx

    text = httpx.get(http + "/metrics", timeout=10).text
    out = []
    for name in ("p2p_tasks_pool_batches_total", "p2p_tasks_pool_batched_total"):
        out.append(sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")))
    return out[0], out[1]


def run_ray(args: argparse.Namespace, fn: Any, arg: Any) -> tuple[dict[str, float], float, float, int]:
    """The same tasks on Ray: (CPU s per process group, wall s, idle share, tasks)."""
    import ray

    ray.init(num_cpus=3, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        remote = ray.remote(fn)
        ray.get([remote.remote(arg(i)) for i in range(300)])  # warm-up: workers started
        procs = {"driver": os.getpid()}
        for k in descendants(os.getpid()):
            procs[f"{program(k)}.{k}"] = k
        before = {k: cpu_s(p) for k, p in procs.items()}
        idle0 = idle_ticks()
        t = time.perf_counter()
        for _ in range(args.batches):
            ray.get([remote.remote(arg(i)) for i in range(args.tasks)])
        wall = time.perf_counter() - t
        idle1 = idle_ticks()
        used = {k: cpu_s(p) - before[k] for k, p in procs.items()}
    finally:
        ray.shutdown()
    return used, wall, idle_share(idle0, idle1), args.tasks * args.batches


class Measure:
    """CPU of every process of the network, and py-spy recorders, around the measured batches."""

    def __init__(self, net: Any, submitter: dict[str, int], py_spy: str | None) -> None:
        self.net = net
        self.procs = {**submitter, "bootstrap": net.boot.proc.pid}
        for i, w in enumerate(net.workers):
            self.procs[f"worker{i}"] = w.proc.pid
            for j, k in enumerate(children(w.proc.pid)):
                self.procs[f"worker{i}.child{j}"] = k
        self.spies = []
        if py_spy:
            Path(py_spy).mkdir(parents=True, exist_ok=True)
            spied = ("embedded" if "embedded" in submitter else "bootstrap", "worker0")
            for name in spied:
                self.spies.append(subprocess.Popen(
                    ["py-spy", "record", "--pid", str(self.procs[name]), "--rate", "200", "--format", "raw",
                     "--output", str(Path(py_spy) / f"{name}.txt"), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)
        self.load = load_average()
        self.before = {k: cpu_s(p) for k, p in self.procs.items()}
        self.idle0 = idle_ticks()
        self.t = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.t
        self.idle = idle_share(self.idle0, idle_ticks())
        self.after = {k: cpu_s(p) for k, p in self.procs.items()}
        self.pool = [pool_counters(w.runtime["http"]) for w in self.net.workers]
        for s in self.spies:
            s.send_signal(2)
        for s in self.spies:
            s.wait(30)


def embedded_child(boot_addr: str, data_dir: str, n: int, batches: int) -> None:
    """``--via embedded``: a capability-less node in this process; after a warm-up it says "ready" on stdout, waits
    for a line on stdin (the parent took its first readings), runs the batches and prints "done"."""
    import trio

    from p2p_fast.protocols.tasks.functions import decode_result, encode, pickle_function
    from p2p_fast.protocols.tasks.spec import TaskSpec
    from taskbench import run_embedded

    async def body(node: Any) -> dict[str, Any]:
        blob = pickle_function(noop)

        async def many(k: int) -> None:
            ids = await node.tasks.submit_many([TaskSpec("function", encode(blob, (i,))) for i in range(k)])
            for j, i in enumerate(ids):
                rec = await node.tasks.dispatcher.wait(i)
                assert rec is not None and rec.state == "completed" and decode_result(rec.result) == j, rec

        await many(300)
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        for _ in range(batches):
            await many(n)
        return {"done": True}

    run_embedded(boot_addr, data_dir, "functions", body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--via", choices=("client", "embedded"), default="client")
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--py-spy", help="record py-spy profiles of the submitting node and worker 0 into this directory")
    ap.add_argument("--engine", choices=("p2p-fast", "ray"), default="p2p-fast")
    ap.add_argument("--hash-rounds", default="0",
                    help="run hash_work with this many sha256 rounds (or '50ms': calibrated) instead of the no-op")
    ap.add_argument("--embedded-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.embedded_child:
        embedded_child(args.embedded_child[0], args.embedded_child[1], args.tasks, args.batches)
        return 0
    if args.hash_rounds.endswith("ms"):
        rounds = calibrate(float(args.hash_rounds[:-2]) / 1000)
    else:
        try:
            rounds = int(args.hash_rounds)
        except ValueError:
            ap.error(f"--hash-rounds: {args.hash_rounds!r} is neither a number of rounds nor a time such as 50ms")
        if rounds < 0:
            ap.error(f"--hash-rounds must be 0 or more, got {rounds}")
    if rounds and args.via == "embedded" and args.engine == "p2p-fast":
        ap.error("--hash-rounds runs through the client (--via client) or on Ray (--engine ray)")
    fn: Any = hash_work if rounds else noop
    what = f"hash_work ({rounds} sha256 rounds)" if rounds else "no-op"

    def arg(i: int) -> Any:
        return (i, rounds) if rounds else i

    if args.engine == "ray":
        used, wall, idle, n = run_ray(args, fn, arg)
        print(f"{n} {what} functions on Ray in {args.batches} batches: {n / wall:.1f} tasks/s; idle {idle:.1%} of "
              f"the CPUs; load {load_average()} at the end")
        print(f"CPU per task, all processes: {sum(used.values()) / n * 1e6:.0f} µs")
        for k, v in sorted(used.items(), key=lambda kv: -kv[1]):
            if v > 0:
                print(f"  {k:28s} {v / n * 1e6:9.1f} µs")
        return 0
    from p2p_fast.client import Client, gather

    with tempfile.TemporaryDirectory(prefix="cpu-per-task-") as tmp:
        net = function_network(Path(tmp), secrets.token_hex(32), args.slots)
        try:
            if args.via == "client":
                with Client(net.http, token=TOKEN) as c:
                    gather([c.submit(noop, i) for i in range(300)])  # warm-up: pool children started, links open
                    m = Measure(net, {"client": os.getpid()}, args.py_spy)
                    for _ in range(args.batches):
                        out = gather([c.submit(fn, arg(i)) for i in range(args.tasks)])
                        assert len(out) == args.tasks and (rounds or out == list(range(args.tasks)))
                    m.stop()
            else:
                child = subprocess.Popen(
                    [sys.executable, __file__, "--embedded-child", net.addr, str(Path(tmp) / "emb"), "--tasks",
                     str(args.tasks), "--batches", str(args.batches)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    text=True, env=dict(os.environ))
                assert child.stdout is not None and child.stdin is not None
                assert child.stdout.readline().strip() == "ready"
                m = Measure(net, {"embedded": child.pid}, args.py_spy)
                child.stdin.write("go\n")
                child.stdin.flush()
                last = child.stdout.read().strip().splitlines()[-1]
                m.stop()
                assert json.loads(last) == {"done": True}, last
                child.wait(30)
        finally:
            net.close()
    n = args.tasks * args.batches
    procs, before, after, wall, load = m.procs, m.before, m.after, m.wall, m.load
    per = {k: (after[k] - before[k]) / n * 1e6 for k in procs}
    print(f"{n} {what} functions through the {args.via} in {args.batches} batches: {n / wall:.1f} tasks/s; "
          f"idle {m.idle:.1%} of the CPUs; load {load} at the start, {load_average()} at the end")
    print(f"CPU per task, all processes: {sum(per.values()):.0f} µs")
    for k, v in per.items():
        print(f"  {k:18s} {v:7.1f} µs")
    batches, calls = sum(b for b, _ in m.pool), sum(c for _, c in m.pool)
    if batches:
        print(f"pool children got {calls:.0f} requests in {batches:.0f} batches (warm-up included): "
              f"{calls / batches:.1f} per batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
