"""The same Python work on p2p-fast, Ray and Dask in one run: a fair race (issue 13).

Workloads, identical for every engine, each a plain Python function run in a worker *process*:

* (a) ``noop(i)`` 5000 times, submitted at once and gathered: throughput, tasks/s;
* (b) ``noop(i)`` 200 times one after the other (submit, wait for the result): round trip p50 / p99, ms;
* (c) ``hash_work(i)``, ~50 ms of sha256 (rounds calibrated once per run on this machine), 500 at once: tasks/s
  and wall time; the ceiling is the machine's cores (2 here: 500 x 50 ms / 2 = 12.5 s at best).

Engines: p2p-fast, 1 bootstrap + 3 worker processes (``tasks.slots`` each: ``--slots``, default the node default 2;
``accept_functions``; one PSK), the
submissions going to the bootstrap, which has no task capability, so every task crosses the network to a worker:

* ``p2p-fast client``: this process uses :mod:`p2p_fast.client` against the bootstrap's HTTP API;
* ``p2p-fast embedded node``: a capability-less node in a process of its own (``node.tasks.submit_many``); (b) is
  awaited in the node's trio loop, as a program that embeds the node runs it (through a thread each round trip
  would add two thread hand-offs). In sequential order (a) and (c) are driven from a thread, as the other engines'
  drivers are; in interleaved order the process times them in its loop too (one hop per burst either way);

Ray: ``ray.init(num_cpus=3)``; Dask: ``LocalCluster(n_workers=3, threads_per_worker=1)``. A separate row keeps the
``echo`` figures of p2p-fast (answered inside the worker's stream reader: no slot, no process, no function call) for
what they are. Also reported: the client CPU time one ``submit`` costs the caller's thread (target <= 100 µs).

Two orders (``--order``):

* ``interleaved`` (the default): the engines are visited in the order A B C D D C B A, each visit on an engine
  started for it alone and stopped after it (nothing else of the race is up meanwhile). A visit runs half of (b)'s
  round trips and all of (c)'s tasks at once; (a) and the client's own figures run in each engine's first visit.
  Each engine's (b) pools the round trips of its two visits, its (c) is 2 x ``--cpu-tasks`` over the two walls.
  Why: this machine's speed drifts by a third within minutes (the calibrated rounds of one run and the next), and
  in sequential order each engine's (c) ran minutes apart from the others'; the mirrored order cancels a steady
  drift and puts an engine's visits closer in time to every other engine's.
* ``sequential``: the order of stops 26-30: one engine at a time, (a), (b), (c) each, started and stopped in
  turn.

    python bench/tasks/bench_fair.py [--runs 2] [--order interleaved|sequential] [--write]
    # needs the "bench" extra: pip install -e .[bench]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from taskbench import Network, load_average, pct, run_child, run_embedded, summary, write_section  # noqa: E402

TOKEN = "bench-fair-" + secrets.token_hex(8)


def noop(i: int) -> int:
    return i


def hash_work(args: tuple[int, int]) -> str:
    seed, rounds = args
    h = hashlib.sha256(str(seed).encode()).digest()
    for _ in range(rounds):
        h = hashlib.sha256(h).digest()
    return h.hex()


def calibrate(target_s: float = 0.05) -> int:
    rounds = 20000
    best = min(_timed(hash_work, (0, rounds)) for _ in range(3))
    return max(1000, int(rounds * target_s / best))


def _timed(fn: Callable[..., Any], arg: Any) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


# -- p2p-fast --------------------------------------------------------------------------------------------------------
def function_network(root: Path, psk: str, slots: int) -> Network:
    """The network of this benchmark: one private network (``P2P_PSK``, inherited by every node process and by the
    embedded node's process: members are trusted), workers that accept functions, the bootstrap behind a token."""
    os.environ["P2P_PSK"] = psk
    return Network(root, listed="functions", slots=slots, worker_tasks={"accept_functions": True},
                   boot_env={"P2P_API_TOKEN": TOKEN}, headers={"Authorization": f"Bearer {TOKEN}"})


def round_trips(one: Callable[[Callable[..., Any], Any], Any], n_rt: int) -> list[float]:
    """(b): ``noop(i)`` ``n_rt`` times one after the other; each round trip in ms."""
    lat = []
    for i in range(n_rt):
        t = time.perf_counter()
        assert one(noop, i) == i
        lat.append((time.perf_counter() - t) * 1000)
    return lat


def run_engine(submit_many: Callable[[Callable[..., Any], list[Any]], list[Any]],
               one: Callable[[Callable[..., Any], Any], Any], n: int, n_rt: int, n_cpu: int,
               rounds: int, timed_round_trips: Callable[[int], list[float]] | None = None) -> dict[str, Any]:
    """The three workloads through two primitives: ``submit_many(fn, args) -> results``, ``one(fn, arg) -> result``.
    ``timed_round_trips(n_rt)``: (b) timed by the engine's own loop instead of through ``one``."""
    submit_many(noop, list(range(30)))  # warm-up: processes started, connections open
    t = time.perf_counter()
    assert submit_many(noop, list(range(n))) == list(range(n))
    thr = n / (time.perf_counter() - t)
    lat = timed_round_trips(n_rt) if timed_round_trips is not None else round_trips(one, n_rt)
    t = time.perf_counter()
    out = submit_many(hash_work, [(i, rounds) for i in range(n_cpu)])
    wall = time.perf_counter() - t
    assert out[1] == hash_work((1, rounds))
    return {"thr": thr, "p50": pct(lat, 50), "p99": pct(lat, 99), "cpu_thr": n_cpu / wall, "cpu_wall": wall}


def bench_client(net: Network, n: int, n_rt: int, n_cpu: int, rounds: int) -> dict[str, Any]:
    from p2p_fast.client import Client, gather

    with Client(net.http, token=TOKEN) as c:
        doc = run_engine(lambda fn, xs: gather([c.submit(fn, x) for x in xs]),
                         lambda fn, x: c.submit(fn, x).result(), n, n_rt, n_cpu, rounds)
        doc.update(client_extras(c, n, n_rt))
    return doc


def client_extras(c: Any, n: int, n_rt: int) -> dict[str, Any]:
    """The client's own figures: CPU per ``submit`` on the caller's thread (encoding, checks, queueing; the sending
    is on another), and the ``echo`` row (answered in the worker's reader: no process, no function)."""
    from p2p_fast.client import gather

    doc: dict[str, Any] = {}
    gather([c.submit(noop, i) for i in range(200)])
    t = time.thread_time()
    futs = [c.submit(noop, i) for i in range(n)]
    doc["submit_us"] = (time.thread_time() - t) / n * 1e6
    gather(futs)
    t = time.perf_counter()
    gather([c.submit("echo", b"%d" % i) for i in range(n)])
    doc["echo_thr"] = n / (time.perf_counter() - t)
    lat = []
    for _ in range(n_rt):
        t = time.perf_counter()
        c.submit("echo", b"x").result()
        lat.append((time.perf_counter() - t) * 1000)
    doc["echo_p50"], doc["echo_p99"] = pct(lat, 50), pct(lat, 99)
    return doc


def bench_embedded(net: Network, root: Path, n: int, n_rt: int, n_cpu: int, rounds: int) -> dict[str, Any]:
    return run_child([__file__, "--embedded", net.addr, "--embedded-dir", str(root / f"emb-{time.monotonic_ns()}"),
                      "--tasks", str(n), "--round-trips", str(n_rt), "--cpu-tasks", str(n_cpu), "--rounds",
                      str(rounds)], 900, "embedded node")


async def run_on_node(node: Any, blob: bytes, xs: list[Any]) -> list[Any]:
    """The pickled function ``blob`` on each of ``xs`` through the embedded ``node``, submitted at once; the
    results in order."""
    from p2p_fast.protocols.tasks.spec import TaskSpec
    from p2p_fast.protocols.tasks.functions import decode_result, encode

    ids = await node.tasks.submit_many([TaskSpec("function", encode(blob, (x,))) for x in xs])
    out = []
    for i in ids:
        rec = await node.tasks.dispatcher.wait(i)
        assert rec is not None and rec.state == "completed", rec
        out.append(decode_result(rec.result))
    return out


def embedded_main(boot_addr: str, data_dir: str, n: int, n_rt: int, n_cpu: int, rounds: int) -> None:
    import trio

    from p2p_fast.protocols.tasks.functions import pickle_function

    async def measure(node: Any) -> dict[str, Any]:
        blobs: dict[Any, bytes] = {}

        async def many(fn: Callable[..., Any], xs: list[Any]) -> list[Any]:
            return await run_on_node(node, blobs.get(fn) or blobs.setdefault(fn, pickle_function(fn)), xs)

        # run_engine is synchronous: drive it from a thread, each primitive hops back onto the node's loop
        def sync_many(fn: Callable[..., Any], xs: list[Any]) -> list[Any]:
            return trio.from_thread.run(many, fn, xs)

        def sync_one(fn: Callable[..., Any], x: Any) -> Any:
            return trio.from_thread.run(many, fn, [x])[0]

        async def in_loop(n_rt: int) -> list[float]:
            # (b) as a program embedding the node runs it: awaited in the node's own trio loop. Timed through the
            # thread above, each round trip would also pay two thread hand-offs the node's API does not need.
            lat = []
            for i in range(n_rt):
                t = time.perf_counter()
                assert (await many(noop, [i])) == [i]
                lat.append((time.perf_counter() - t) * 1000)
            return lat

        return await trio.to_thread.run_sync(run_engine, sync_many, sync_one, n, n_rt, n_cpu, rounds,
                                             lambda k: trio.from_thread.run(in_loop, k))

    run_embedded(boot_addr, data_dir, "functions", measure)


# -- Ray and Dask ----------------------------------------------------------------------------------------------------
def bench_ray(n: int, n_rt: int, n_cpu: int, rounds: int) -> dict[str, Any]:
    import ray

    ray.init(num_cpus=3, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        remotes: dict[Any, Any] = {}

        def r(fn: Callable[..., Any]) -> Any:
            return remotes.get(fn) or remotes.setdefault(fn, ray.remote(fn))

        return run_engine(lambda fn, xs: ray.get([r(fn).remote(x) for x in xs]),
                          lambda fn, x: ray.get(r(fn).remote(x)), n, n_rt, n_cpu, rounds)
    finally:
        ray.shutdown()


def bench_dask(n: int, n_rt: int, n_cpu: int, rounds: int) -> dict[str, Any]:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        return run_engine(lambda fn, xs: client.gather(client.map(fn, xs, pure=False)),
                          lambda fn, x: client.submit(fn, x, pure=False).result(), n, n_rt, n_cpu, rounds)


# -- interleaved order: every engine up at once ----------------------------------------------------------------------
class Session:
    """One engine, up: ``many(fn, xs) -> results``, ``one(fn, x) -> result``; (b) and (c) timed by ``round_trips``
    and ``burst``. ``close`` takes it down."""

    name = ""

    def many(self, fn: Callable[..., Any], xs: list[Any]) -> list[Any]:
        raise NotImplementedError

    def one(self, fn: Callable[..., Any], x: Any) -> Any:
        return self.many(fn, [x])[0]

    def warm_up(self) -> None:
        self.many(noop, list(range(30)))  # processes started, connections open
        self.many(hash_work, [(i, 1000) for i in range(12)])  # every worker process has run a hash_work

    def burst(self, fn: Callable[..., Any], xs: list[Any]) -> float:
        """Wall seconds for ``xs`` submitted at once and gathered."""
        t = time.perf_counter()
        out = self.many(fn, xs)
        wall = time.perf_counter() - t
        assert len(out) == len(xs)
        return wall

    def round_trips(self, n_rt: int) -> list[float]:
        return round_trips(self.one, n_rt)

    def close(self) -> None:
        pass


class ClientSession(Session):
    name = "p2p-fast client"

    def __init__(self, net: Network) -> None:
        from p2p_fast.client import Client

        self.client = Client(net.http, token=TOKEN)

    def many(self, fn: Callable[..., Any], xs: list[Any]) -> list[Any]:
        from p2p_fast.client import gather

        return gather([self.client.submit(fn, x) for x in xs])

    def one(self, fn: Callable[..., Any], x: Any) -> Any:
        return self.client.submit(fn, x).result()

    def extras(self, n: int, n_rt: int) -> dict[str, Any]:
        return client_extras(self.client, n, n_rt)

    def close(self) -> None:
        self.client.close()


class EmbeddedSession(Session):
    """The embedded node in a process of its own (``--embedded ... --serve``), told what to run on its stdin; it
    times each workload in its own trio loop and answers one JSON line."""

    name = "p2p-fast embedded node"

    def __init__(self, net: Network, root: Path) -> None:
        import json
        import subprocess

        self.json = json
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--embedded", net.addr, "--embedded-dir",
             str(root / f"emb-{time.monotonic_ns()}"), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=str(Path(__file__).resolve().parents[2]), env=dict(os.environ))
        ready = self._answer()
        assert ready == {"ready": True}, ready

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"embedded node exited with {self.proc.wait(30)}")
            if line.startswith("{"):
                return self.json.loads(line)  # type: ignore[no-any-return]

    def _ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def warm_up(self) -> None:
        pass  # the child warmed up before it said ready

    def many(self, fn: Callable[..., Any], xs: list[Any]) -> list[Any]:
        raise NotImplementedError("the embedded node's workloads run in its own process")

    def burst(self, fn: Callable[..., Any], xs: list[Any]) -> float:
        rounds = xs[0][1] if fn is hash_work else 0
        return float(self._ask(op="burst", fn=fn.__name__, n=len(xs), rounds=rounds)["wall"])

    def round_trips(self, n_rt: int) -> list[float]:
        return list(self._ask(op="rt", n=n_rt)["lat"])

    def close(self) -> None:
        try:
            self._ask(op="quit")
        except Exception:
            pass
        try:
            self.proc.wait(60)
        except Exception:
            self.proc.kill()


class RaySession(Session):
    name = "Ray"

    def __init__(self) -> None:
        import ray

        self.ray = ray
        ray.init(num_cpus=3, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        self.remotes: dict[Any, Any] = {}

    def _r(self, fn: Callable[..., Any]) -> Any:
        return self.remotes.get(fn) or self.remotes.setdefault(fn, self.ray.remote(fn))

    def many(self, fn: Callable[..., Any], xs: list[Any]) -> list[Any]:
        return list(self.ray.get([self._r(fn).remote(x) for x in xs]))

    def one(self, fn: Callable[..., Any], x: Any) -> Any:
        return self.ray.get(self._r(fn).remote(x))

    def close(self) -> None:
        self.ray.shutdown()


class DaskSession(Session):
    name = "Dask"

    def __init__(self) -> None:
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None)
        self.client = Client(self.cluster)

    def many(self, fn: Callable[..., Any], xs: list[Any]) -> list[Any]:
        return list(self.client.gather(self.client.map(fn, xs, pure=False)))

    def one(self, fn: Callable[..., Any], x: Any) -> Any:
        return self.client.submit(fn, x, pure=False).result()

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


def start_session(engine: str, root: Path, slots: int) -> tuple[Session, Network | None]:
    """Bring one engine up (p2p-fast: a network of its own, then the client or the embedded node) and warm it up."""
    net = None
    if engine in ("client", "embedded"):
        net = function_network(root / f"net-{time.monotonic_ns()}", secrets.token_hex(32), slots)
    try:
        session: Session
        if engine == "client":
            assert net is not None
            session = ClientSession(net)
        elif engine == "embedded":
            assert net is not None
            session = EmbeddedSession(net, root)
        elif engine == "ray":
            session = RaySession()
        else:
            session = DaskSession()
        session.warm_up()
        return session, net
    except BaseException:
        if net is not None:
            net.close()
        raise


def run_interleaved(engines: list[str], root: Path, n: int, n_rt: int, n_cpu: int, rounds: int,
                    slots: int) -> dict[str, dict[str, Any]]:
    """One run in the interleaved order (module docstring): the engines visited A B C D D C B A, each visit on an
    engine started for it alone (nothing else of the race is up) and stopped after it; a visit runs half of (b)'s
    round trips and (c); (a) and the client's own figures run in each engine's first visit."""
    docs: dict[str, dict[str, Any]] = {}
    lat: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}
    for engine in engines + engines[::-1]:
        session, net = start_session(engine, root, slots)
        try:
            name = session.name
            first = name not in docs
            doc = docs.setdefault(name, {})
            if first:
                doc["thr"] = n / session.burst(noop, list(range(n)))
                if isinstance(session, ClientSession):
                    doc.update(session.extras(n, n_rt))
            lat.setdefault(name, []).extend(session.round_trips(n_rt // 2 if first else n_rt - n_rt // 2))
            walls.setdefault(name, []).append(session.burst(hash_work, [(i, rounds) for i in range(n_cpu)]))
        finally:
            session.close()
            if net is not None:
                net.close()
                os.environ.pop("P2P_PSK", None)
    for name, doc in docs.items():
        doc["p50"], doc["p99"] = pct(lat[name], 50), pct(lat[name], 99)
        doc["cpu_thr"] = len(walls[name]) * n_cpu / sum(walls[name])
        for i, w in enumerate(walls[name]):
            doc[f"cpu_thr_{i + 1}"] = n_cpu / w
    return docs


def embedded_serve(boot_addr: str, data_dir: str) -> None:
    """``--embedded ... --serve``: the embedded node for the interleaved order. Warms up, prints {"ready": true},
    then runs what each stdin line asks (JSON: ``burst`` of ``noop`` or ``hash_work``, ``rt``, ``quit``), timed in
    the node's own trio loop, and prints one JSON line per answer. Figures go on stdout, nothing else does."""
    import json

    import trio

    from p2p_fast.protocols.tasks.functions import pickle_function

    fns = {"noop": noop, "hash_work": hash_work}
    blobs = {name: pickle_function(fn) for name, fn in fns.items()}

    async def body(node: Any) -> dict[str, Any]:
        async def many(name: str, xs: list[Any]) -> list[Any]:
            return await run_on_node(node, blobs[name], xs)

        def say(doc: dict[str, Any]) -> None:
            sys.stdout.write(json.dumps(doc) + "\n")
            sys.stdout.flush()

        await many("noop", list(range(30)))
        await many("hash_work", [(i, 1000) for i in range(12)])
        say({"ready": True})
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                say({"bye": True})
                break
            if cmd["op"] == "burst":
                xs = list(range(cmd["n"])) if cmd["fn"] == "noop" else [(i, cmd["rounds"]) for i in range(cmd["n"])]
                t = time.perf_counter()
                out = await many(cmd["fn"], xs)
                wall = time.perf_counter() - t
                assert len(out) == len(xs) and (cmd["fn"] != "noop" or out == xs)
                say({"wall": wall})
            elif cmd["op"] == "rt":
                lat = []
                for i in range(cmd["n"]):
                    t = time.perf_counter()
                    assert (await many("noop", [i])) == [i]
                    lat.append((time.perf_counter() - t) * 1000)
                say({"lat": lat})
            else:
                raise ValueError(f"unknown command {cmd!r}")
        return {}

    run_embedded(boot_addr, data_dir, "functions", body)


# -- main ------------------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--round-trips", type=int, default=200)
    ap.add_argument("--cpu-tasks", type=int, default=500)
    ap.add_argument("--slots", type=int, default=2, help="tasks.slots of each p2p-fast worker (the node default: 2)")
    ap.add_argument("--only", action="append", help="client, embedded, ray, dask (repeatable)")
    ap.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    ap.add_argument("--embedded", help=argparse.SUPPRESS)
    ap.add_argument("--embedded-dir", help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--order", choices=("interleaved", "sequential"), default="interleaved",
                    help="interleaved: every engine up, (b) and (c) in the order A B C D D C B A (the default); "
                         "sequential: one engine after the other")
    ap.add_argument("--rounds", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.embedded and args.serve:
        embedded_serve(args.embedded, args.embedded_dir)
        return 0
    if args.embedded:
        embedded_main(args.embedded, args.embedded_dir, args.tasks, args.round_trips, args.cpu_tasks, args.rounds)
        return 0
    engines = args.only or ["client", "embedded", "ray", "dask"]
    unknown = sorted(set(engines) - {"client", "embedded", "ray", "dask"})
    if unknown:
        ap.error(f"--only: unknown engine {', '.join(map(repr, unknown))} (client, embedded, ray, dask)")
    rounds = calibrate()
    print(f"hash_work: {rounds} sha256 rounds ~ 50 ms here; load {os.getloadavg()}", flush=True)
    load_start = load_average()
    res: dict[str, list[dict[str, Any]]] = {}

    def record(name: str, doc: dict[str, Any]) -> None:
        res.setdefault(name, []).append(doc)
        print(f"  {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in doc.items()), flush=True)

    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}, load {os.getloadavg()}", flush=True)
        if args.order == "interleaved":
            with tempfile.TemporaryDirectory(prefix="bench-fair-") as tmp:
                for name, doc in run_interleaved(engines, Path(tmp), args.tasks, args.round_trips, args.cpu_tasks,
                                                 rounds, args.slots).items():
                    record(name, doc)
            continue
        if "client" in engines or "embedded" in engines:
            with tempfile.TemporaryDirectory(prefix="bench-fair-") as tmp:
                net = function_network(Path(tmp), secrets.token_hex(32), args.slots)
                try:
                    if "client" in engines:
                        record("p2p-fast client", bench_client(net, args.tasks, args.round_trips, args.cpu_tasks,
                                                               rounds))
                    if "embedded" in engines:
                        record("p2p-fast embedded node", bench_embedded(net, Path(tmp), args.tasks,
                                                                        args.round_trips, args.cpu_tasks, rounds))
                finally:
                    net.close()
                    os.environ.pop("P2P_PSK", None)
        if "ray" in engines:
            record("Ray", bench_ray(args.tasks, args.round_trips, args.cpu_tasks, rounds))
        if "dask" in engines:
            record("Dask", bench_dask(args.tasks, args.round_trips, args.cpu_tasks, rounds))

    versions = [f"{label} {__import__(mod).__version__}" for mod, label in (("ray", "Ray"),
                                                                            ("distributed", "Dask distributed"))
                if mod in sys.modules]

    def col(name: str, key: str, digits: int = 0) -> str:
        return summary([d[key] for d in res.get(name, []) if key in d], digits)

    lines = [
        f"Command: `python bench/tasks/bench_fair.py --runs {args.runs} --slots {args.slots} --order {args.order}` "
        f"({args.tasks} no-op functions at once; "
        f"{args.round_trips} sequential round trips; {args.cpu_tasks} x ~50 ms of sha256 ({rounds} rounds) at once). "
        f"Median (min-max, runs); {os.cpu_count()} CPUs, Python {platform.python_version()}"
        + "".join(", " + v for v in versions) + f". Load average (1/5/15 min) {load_start} at the start, {load_average()} at the "
        "end (the machine is shared: compare within a run).",
        "",
        "| engine | (a) no-op, tasks/s | (b) round trip p50, ms | (b) p99, ms | (c) 50 ms hashing, tasks/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in res:
        lines.append(f"| {name} | {col(name, 'thr')} | {col(name, 'p50', 2)} | {col(name, 'p99', 2)} | "
                     f"{col(name, 'cpu_thr', 1)} |")
    if "p2p-fast client" in res:
        name = "p2p-fast client"
        lines.append(f"| p2p-fast client, `echo` (answered in the worker's stream reader: no process, no function) | "
                     f"{col(name, 'echo_thr')} | {col(name, 'echo_p50', 2)} | {col(name, 'echo_p99', 2)} | - |")
        lines += ["", f"Client CPU per `submit` of one function task (caller's thread, `time.thread_time`): "
                      f"{col(name, 'submit_us', 1)} µs."]
    if args.order == "interleaved":
        lines += ["", "Order: interleaved. The engines are visited A B C D D C B A, each visit on an engine started "
                      "for it alone; a visit runs half of (b) and all of (c) ((a) in the first visit), and each "
                      "engine's (b) and (c) pool its two visits."]
    text = "\n".join(lines)
    print()
    print(text)
    if args.write:
        write_section(f"Tasks: p2p-fast vs Ray vs Dask, the same Python functions (workers with {args.slots} slot"
                      f"{'s' if args.slots != 1 else ''})", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
