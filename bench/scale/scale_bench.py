"""The scale benchmark: N ``p2p-node`` processes on 127.0.0.1, driven only through the HTTP API, as a new user would
run them; with ``--netns`` each in a network namespace of its own on one bridge (``testing.testbed``: an address per
node, as pods on a flat cluster network, mDNS multicast included; needs root).

    .venv/bin/python bench/scale/scale_bench.py --nodes 30 [--settle 20 --window 20 --gossip 5 --tasks 60 --profile
                                                         --profile-nodes 3 --netns]

One bootstrap (``node/bootstrap.yaml``) and N-1 workers (``node/worker.yaml``, mDNS on as that file has it), every
one with ``--listen-host 127.0.0.1 --listen-port 0 --http-listen 127.0.0.1:0 --data-dir <own>``, workers with
``--bootstrap <the bootstrap>``, all started at once (a join storm). Reports: time until every node is ready, time until
every sampled node's live view (``GET /v1/capabilities``) holds every worker, settled idle CPU (% of one core, from
/proc utime+stime over ``--window`` seconds) and RSS per node, gossip spread (``POST /v1/gossip`` on one worker, read
back from every node's ``GET /v1/gossip``: p50 / max / missing), task spread over workers, ERROR / Traceback lines,
Noise authentication failures, connections closed for missed pings, and exit codes on SIGTERM. Prints JSON and a
Markdown row. ``run_scale`` is what ``tests/scale`` calls. With ``--netns`` the addresses above are the node's own
(port 4001, HTTP on 8080), and the benchmark reaches each API from inside its namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from harness import Cluster, NodeProcess, wait_until  # noqa: E402

from bench.procstat import CLK_TCK, cpu_ticks, rss_mib  # noqa: E402
from testing.testbed._system import call_in_netns  # noqa: E402

AUTH_FAILURE = "Failed authentication"
PING_CLOSE = "pings in a row"
NETNS_SUBNET = "10.77.0.0/22"  # --netns: room for 1020 nodes
NETNS_CALL_TIMEOUT = 120.0
NETNS_BACKLOG = 20000  # net.core.netdev_max_backlog during a --netns run (restored after)
#: --netns: TCP counters of every namespace, summed (/proc/net/netstat and snmp, "Section.Name"), reported once the
#: run is over: failed dials (AttemptFails), connections reset, SYNs dropped by a full listen queue, timeouts.
TCP_COUNTERS = ("Tcp.AttemptFails", "Tcp.EstabResets", "Tcp.OutRsts", "TcpExt.ListenOverflows", "TcpExt.ListenDrops",
                "TcpExt.TCPTimeouts", "TcpExt.TCPSynRetrans")


def tcp_counters(host: Any) -> dict[str, int]:
    """:data:`TCP_COUNTERS` of ``host``'s namespace (read by a thread inside it: ``/proc/thread-self/net``)."""
    def read() -> dict[str, int]:
        values: dict[str, int] = {}
        for table in ("netstat", "snmp"):
            lines = Path(f"/proc/thread-self/net/{table}").read_text().splitlines()
            for names, nums in zip(lines[::2], lines[1::2]):
                section, _, keys = names.partition(": ")
                for k, v in zip(keys.split(), nums.partition(": ")[2].split()):
                    values[f"{section}.{k}"] = int(v)
        return {k: values.get(k, 0) for k in TCP_COUNTERS}

    return call_in_netns(host.ns, read, timeout=NETNS_CALL_TIMEOUT)  # type: ignore[no-any-return]


def _role_config(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "node" / f"{role}.yaml").read_text())


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


# Nodes asked for anything but probes and /metrics: their first such request built the full API app (FastAPI and
# pydantic, about 14 MiB; p2p_fast.app.api.front), which a node serving only probes and scrapes never builds.
API_USED: set[int] = set()


def _get(node: NodeProcess, path: str, timeout: float = 10) -> Any:
    API_USED.add(id(node))
    return node.via(lambda: httpx.get(node.http + path, timeout=timeout)).json()


def _post(node: NodeProcess, path: str, body: Any, timeout: float = 30) -> Any:
    API_USED.add(id(node))
    r = node.via(lambda: httpx.post(node.http + path, json=body, timeout=timeout))
    r.raise_for_status()
    return r.json()


def _peers(node: NodeProcess) -> list[Any]:
    try:
        return _get(node, "/v1/peers")
    except httpx.HTTPError:
        return []


def _mesh_size(node: NodeProcess) -> int | None:
    """The node's GossipSub mesh on the advertisement topic: each advertisement is received about that many times
    and forwarded one time fewer."""
    try:
        topics = _get(node, "/v1/status").get("topics", {})
    except httpx.HTTPError:
        return None
    sizes = [n for t, n in topics.items() if t.endswith("/capabilities")]
    return sizes[0] if sizes else None


def _mean_or_none(values: list[int]) -> float | None:
    """The mean to one decimal, or None when no node answered (not a mesh of 0)."""
    return round(statistics.mean(values), 1) if values else None


def _metrics_text(node: NodeProcess) -> str:
    try:
        return node.via(lambda: httpx.get(node.http + "/metrics", timeout=10)).text
    except httpx.HTTPError:
        return ""


RUNAWAY_CPU_PCT = 20.0  # a settled node using this much of a core is stuck in something: its stacks are dumped


def dump_stacks(node: NodeProcess, workdir: Path) -> str:
    """``py-spy dump`` of a node's threads into ``<workdir>/<name>/stacks.txt``; that path, or why there is none."""
    target = workdir / node.name / "stacks.txt"
    try:
        res = subprocess.run([str(Path(sys.executable).parent / "py-spy"), "dump", "--locals", "-p",
                              str(node.proc.pid)],  # type: ignore[union-attr]
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{node.name}: no stacks ({exc})"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(res.stdout + res.stderr)
    return str(target)


def _presence_messages(node: NodeProcess) -> tuple[float, float]:
    """Presence messages this node has received (advertisements, and heartbeats from before they were dropped) and
    advertisements it has published."""
    totals = {"p2p_messages_in_total": 0.0, "p2p_messages_out_total": 0.0}
    for line in _metrics_text(node).splitlines():
        name = line.split("{", 1)[0]
        if name in totals and ("/capabilities\"" in line or "/heartbeat\"" in line):
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["p2p_messages_in_total"], totals["p2p_messages_out_total"]


def _pruned(nodes: list[NodeProcess]) -> dict[str, int]:
    """Connections the nodes' connection managers have closed so far (``p2p_connections_pruned_total``), summed per
    reason: ``watermark`` is churn (a settled network prunes nothing in its idle window), ``transient`` the
    connections of DHT announcements closed after them."""
    total: dict[str, int] = {}
    for node in nodes:
        for line in _metrics_text(node).splitlines():
            if line.startswith("p2p_connections_pruned_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                total[reason] = total.get(reason, 0) + int(float(line.rsplit(" ", 1)[1]))
    return total


def _ready(node: NodeProcess) -> bool:
    """``/readyz`` (what a Kubernetes readiness probe asks; the same answer as ``ready`` in ``/v1/status``)."""
    if node.runtime() is None:
        return False
    return node.via(lambda: httpx.get(node.http + "/readyz", timeout=5)).status_code == 200


def _with_settings(config: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``section.key`` values replaced (``--set``)."""
    for dotted, value in settings.items():
        section, _, key = dotted.partition(".")
        config.setdefault(section, {})[key] = value
    return config


def start_network(cluster: Cluster, n: int, settings: dict[str, Any] | None = None,
                  env: dict[str, str] | None = None, env_b: dict[str, str] | None = None,
                  hosts: list[Any] | None = None) -> tuple[NodeProcess, list[NodeProcess], float]:
    """Start the bootstrap, then all N-1 workers at once; return (bootstrap, workers, t0). Workers with an even
    number get ``env_b`` on top of ``env`` (group B of a side-by-side comparison). With ``hosts`` (test-bed hosts,
    one per node), node i runs in ``hosts[i]``'s network namespace on its address, reached through ``host.call``."""
    settings, env = settings or {}, env or {}

    def place(i: int) -> dict[str, Any]:
        if hosts is None:
            return {"extra_args": ["--listen-host", "127.0.0.1", "--listen-port", "0", "--http-listen",
                                   "127.0.0.1:0", "--console", "off"]}
        host = hosts[i]
        return {"extra_args": ["--listen-host", host.ip, "--listen-port", "4001", "--http-listen",
                               f"{host.ip}:8080", "--console", "off"],
                "prefix": ["ip", "netns", "exec", host.ns],
                # The call's own deadline (10 s by default) must outlast the request's timeouts (up to 90 s).
                "via": lambda fn, ns=host.ns: call_in_netns(ns, fn, timeout=NETNS_CALL_TIMEOUT)}

    t0 = time.monotonic()
    at = place(0)
    boot = cluster.add("bootstrap", _with_settings(_role_config("bootstrap"), settings), env=env, **at)
    boot.start().wait_started(60)
    boot_addr = boot.addr()
    workers = []
    for i in range(1, n):
        at = place(i)
        at["extra_args"] = at["extra_args"] + ["--bootstrap", boot_addr]
        workers.append(cluster.add(f"w{i:03d}", _with_settings(_role_config("worker"), settings),
                                   env={**env, **(env_b or {})} if i % 2 == 0 else env, **at).start())
    return boot, workers, t0


def log_counts(nodes: list[NodeProcess]) -> dict[str, int]:
    counts = {"error_lines": 0, "traceback_lines": 0, "auth_failures": 0, "ping_closes": 0}
    for node in nodes:
        try:
            text = node.stderr_path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            counts["error_lines"] += " ERROR " in line or " CRITICAL " in line
            counts["traceback_lines"] += line.startswith("Traceback")
            counts["auth_failures"] += AUTH_FAILURE in line
            counts["ping_closes"] += PING_CLOSE in line
    return counts


def late_arrivals(arrived: dict[tuple[str, str], float], ready: dict[str, float | None],
                  count: int = 8) -> list[str]:
    """The last ``count`` (view, worker) pairs to appear, as ``view<-worker at T s (worker ready at R s)``: what held
    convergence up, and whether it was a late node or a record that took long to travel."""
    last = sorted(arrived.items(), key=lambda kv: kv[1])[-count:]
    return [f"{view}<-{worker} at {t} s (ready at {ready.get(worker)} s)" for (view, worker), t in last]


def run_scale(workdir: Path, n: int, *, netns: bool = False, **kw: Any) -> dict[str, Any]:
    """The benchmark (keywords: :func:`measure`'s). ``netns``: every node in a network namespace of its own on one
    bridge (the test bed, ``testing/testbed``), an address each, as pods on a flat cluster network, multicast
    (mDNS) included; otherwise every node on 127.0.0.1."""
    if not netns:
        return measure(workdir, n, **kw)
    from testing.testbed.topology import Testbed

    # Room the emulation needs and a cluster has (each machine its own kernel), for the run only, restored after:
    # - every packet between two namespaces is queued twice on a CPU's backlog (veth, bridge): the default 1000
    #   overflowed in 100-node runs (13,281 packets dropped over a session's runs); with 20,000, none;
    # - the kernel's ARP table is one for all namespaces, 1024 entries at most by default: 100 nodes that each
    #   talk to 15-99 others overflowed it ("neighbor table overflow", 1176 times in a session), and a dial to a
    #   neighbour without an entry lost its SYNs (10,000-21,000 retransmitted a run, ~500 dials failed).
    wanted = {"core/netdev_max_backlog": NETNS_BACKLOG, "ipv4/neigh/default/gc_thresh1": n * n,
              "ipv4/neigh/default/gc_thresh2": 2 * n * n, "ipv4/neigh/default/gc_thresh3": 4 * n * n}
    before = {k: Path(f"/proc/sys/net/{k}").read_text().strip() for k in wanted}
    drops = softnet_drops()
    try:
        for key in ("core/netdev_max_backlog", "ipv4/neigh/default/gc_thresh3", "ipv4/neigh/default/gc_thresh2",
                    "ipv4/neigh/default/gc_thresh1"):  # raised from the top: thresh1 <= thresh2 <= thresh3
            Path(f"/proc/sys/net/{key}").write_text(str(max(int(before[key]), wanted[key])))
        with Testbed(NETNS_SUBNET, label="scale") as bed:
            out = measure(workdir, n, hosts=[bed.add_host(f"n{i:03d}") for i in range(n)], **kw)
    finally:
        for key in ("ipv4/neigh/default/gc_thresh1", "ipv4/neigh/default/gc_thresh2",
                    "ipv4/neigh/default/gc_thresh3", "core/netdev_max_backlog"):
            Path(f"/proc/sys/net/{key}").write_text(before[key])
    out["softnet_drops"] = softnet_drops() - drops  # packets the emulated network dropped anyway (machine-wide)
    return out


def softnet_drops() -> int:
    """Packets dropped for a full per-CPU backlog since boot, all CPUs (/proc/net/softnet_stat, column 2)."""
    lines = Path("/proc/net/softnet_stat").read_text().split("\n")
    return sum(int(line.split()[1], 16) for line in lines if line.strip())


def measure(workdir: Path, n: int, *, settle: float = 20.0, window: float = 20.0, gossip: int = 5,
            tasks: int = 0, sample: int = 6, ready_timeout: float = 240.0, seed: int = 1,
            profile: bool = False, profile_rate: int = 50, profile_nodes: int = 1,
            settings: dict[str, Any] | None = None, env: dict[str, str] | None = None,
            env_b: dict[str, str] | None = None, hosts: list[Any] | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    cluster = Cluster(workdir)
    out: dict[str, Any] = {"nodes": n, "load_before": os.getloadavg()[0], "netns": hosts is not None}
    try:
        boot, workers, t0 = start_network(cluster, n, settings, env, env_b, hosts)
        nodes = [boot, *workers]
        for w in workers:
            w.wait_started(ready_timeout)
        pending = set(range(n))
        ready_at: dict[int, float] = {}

        def ready_now(i: int) -> bool:
            try:
                return _ready(nodes[i])
            except httpx.HTTPError:
                return False

        # Every pending node asked at once (one at a time, a round through 100 loaded nodes took longer than the
        # nodes did to get ready, and the time measured was the poll's).
        polls = ThreadPoolExecutor(max_workers=32)

        def all_ready() -> bool:
            order = sorted(pending)
            for i, ok in zip(order, polls.map(ready_now, order)):
                if ok:
                    ready_at[i] = time.monotonic() - t0
                    pending.discard(i)
            return not pending

        try:
            wait_until(all_ready, ready_timeout, "every node ready", interval=0.5)
            out["ready_s"] = round(max(ready_at.values()), 1)
        except TimeoutError:  # measured on: what is not ready is reported
            out["not_ready"] = len(pending)
        finally:
            polls.shutdown()
        if ready_at:
            out["ready_p50_s"] = round(_pct(sorted(ready_at.values()), 0.5), 1)
        sampled = [boot] + rng.sample(workers, min(sample, len(workers)))

        def view_complete(node: NodeProcess) -> bool:
            try:
                doc = _get(node, "/v1/capabilities")
            except httpx.HTTPError:
                return False
            seen = set(doc["network"].get("compute", []))
            now = round(time.monotonic() - t0, 1)
            for w in workers:
                if w.peer_id in seen:
                    arrived.setdefault((node.name, w.name), now)
            missing[node.name] = sorted(w.name for w in workers if w.peer_id not in seen and w is not node)
            return not missing[node.name]

        todo = list(sampled)
        missing: dict[str, list[str]] = {}
        arrived: dict[tuple[str, str], float] = {}  # (view, worker) -> when the view first held the worker

        def converged() -> bool:
            todo[:] = [s for s in todo if not view_complete(s)]
            return not todo

        try:
            wait_until(converged, ready_timeout, "every sampled live view to hold every worker", interval=0.5)
            out["converged_s"] = round(time.monotonic() - t0, 1)
        except TimeoutError:
            out["not_converged"] = len(todo)
            out["views_missing"] = {s.name: missing.get(s.name) for s in todo}  # which workers each view lacks
        out["late_arrivals"] = late_arrivals(arrived, {w.name: round(ready_at[i + 1], 1) if i + 1 in ready_at else None
                                                  for i, w in enumerate(workers)})

        # Settled idle cost: wait, then CPU over a window (nothing driven meanwhile).
        time.sleep(settle)
        pids = [nd.proc.pid for nd in nodes]  # type: ignore[union-attr]
        spies: list[subprocess.Popen[bytes]] = []
        if profile and workers:
            # Several workers spread over the start order, active samples only (a thread waiting in epoll is idle
            # to py-spy): where a settled node's CPU goes, summed over them.
            step = max(1, len(workers) // profile_nodes)
            for i, w in enumerate(workers[::step][:profile_nodes]):
                spies.append(subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "-o",
                     str(workdir / f"profile-{i}.txt"), "-d", str(int(window)), "-r", str(profile_rate), "-p",
                     str(w.proc.pid)],  # type: ignore[union-attr]
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        msgs_before = [_presence_messages(nd) for nd in sampled]
        pruned_before = _pruned(nodes)
        before = [cpu_ticks(p) for p in pids]
        t_a = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t_a
        cpu = [100.0 * (cpu_ticks(p) - b) / CLK_TCK / elapsed for p, b in zip(pids, before)]
        rss = [rss_mib(p) for p in pids]
        msgs_after = [_presence_messages(nd) for nd in sampled]
        rates = [(a[0] - b[0]) / elapsed for a, b in zip(msgs_after, msgs_before)]
        out["presence_published_per_node_s"] = round(statistics.mean(
            (a[1] - b[1]) / elapsed for a, b in zip(msgs_after, msgs_before)), 4)
        pruned_after = _pruned(nodes)
        out.update(pruned_before_window=pruned_before.get("watermark", 0),
                   pruned_in_window=pruned_after.get("watermark", 0) - pruned_before.get("watermark", 0),
                   transient_closed_in_window=pruned_after.get("transient", 0) - pruned_before.get("transient", 0))
        if env_b:  # side by side: workers of group A (odd numbers) against group B (even numbers, env_b)
            group_b = [i % 2 == 0 for i in range(1, n)]
            cpu_w = cpu[1:]
            out["idle_cpu_pct_group_a"] = round(statistics.mean(c for c, b in zip(cpu_w, group_b) if not b), 3)
            out["idle_cpu_pct_group_b"] = round(statistics.mean(c for c, b in zip(cpu_w, group_b) if b), 3)
        out["presence_msgs_per_node_s"] = round(statistics.mean(rates), 3)
        if spies:
            for spy in spies:
                spy.wait(timeout=window + 30)
            out["profile"] = top_functions(sorted(workdir.glob("profile-*.txt")))
        busiest = sorted(zip(cpu, nodes), key=lambda pair: pair[0], reverse=True)[:3]
        out["idle_cpu_busiest"] = [f"{nd.name} {c:.2f} %" for c, nd in busiest]  # where an outlier comes from
        out["rss_largest"] = [f"{nd.name} {r:.1f} MiB" for r, nd in sorted(
            zip(rss, nodes), key=lambda pair: pair[0], reverse=True)[:3]]
        for label, group in (("probes_only", [r for r, nd in zip(rss, nodes) if id(nd) not in API_USED]),
                             ("api_used", [r for r, nd in zip(rss, nodes) if id(nd) in API_USED])):
            if group:
                out[f"rss_mib_{label}"] = f"{statistics.mean(group):.1f} (max {max(group):.1f}, {len(group)} nodes)"
        runaway = [nd for c, nd in busiest if c >= RUNAWAY_CPU_PCT]
        if runaway:  # what such a node is doing, while it still does it
            out["runaway_stacks"] = [dump_stacks(nd, workdir) for nd in runaway]
        out.update(idle_cpu_pct_mean=round(statistics.mean(cpu), 2), idle_cpu_pct_max=round(max(cpu), 2),
                   idle_cpu_pct_total=round(sum(cpu), 1), rss_mib_mean=round(statistics.mean(rss), 1),
                   rss_mib_max=round(max(rss), 1), peers_mean=round(statistics.mean(
                       len(_peers(nd)) for nd in sampled), 1),
                   mesh_mean=_mean_or_none([m for m in map(_mesh_size, sampled) if m is not None]),
                   load_idle=os.getloadavg()[0])

        # Gossip spread: texts from one worker, read back from every node.
        sender = workers[0] if workers else boot
        texts = [f"scale-{seed}-{i}-{rng.random():.9f}" for i in range(gossip)]
        for text in texts:
            _post(sender, "/v1/gossip", {"text": text})
            time.sleep(0.2)
        # Every node is read concurrently until it holds every text or 30 s pass; a node not read once by then
        # (too busy to answer: its first /v1 request builds the API) is asked again, so "missing" counts texts a
        # node did not get rather than a node the benchmark did not reach in time (one never read at all still counts
        # as missing them, and is reported as gossip_unread too).
        lat: list[float] = []
        missing = 0
        others = [nd for nd in nodes if nd is not sender]
        got: dict[int, dict[str, float]] = {}

        def read(i: int, timeout: float) -> None:
            try:
                log = _get(others[i], "/v1/gossip?limit=1000", timeout=timeout)
            except httpx.HTTPError:
                return  # asked again next round
            seen = {m["text"]: m["received_at"] - m["sent_at"] for m in log}
            got[i] = {t: seen[t] for t in texts if t in seen}

        with ThreadPoolExecutor(max_workers=16) as reads:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                todo = [i for i in range(len(others)) if len(got.get(i, {})) < len(texts)]
                if not todo:
                    break
                list(reads.map(lambda i: read(i, 10), todo))
                time.sleep(0.5)
            for _ in range(3):
                unread = [i for i in range(len(others)) if i not in got]
                list(reads.map(lambda i: read(i, 30), unread))
        for i in range(len(others)):
            lat.extend(got.get(i, {}).values())
            missing += len(texts) - len(got.get(i, {}))  # a node never read counts as missing them all
        out["gossip_unread"] = sum(1 for i in range(len(others)) if i not in got)
        out.update(gossip_deliveries=len(texts) * len(others), gossip_missing=missing,
                   gossip_p50_ms=round(1000 * _pct(lat, 0.5), 1), gossip_max_ms=round(1000 * max(lat or [0]), 1))

        if tasks and workers:
            ids = _post(sender, "/v1/tasks/batch", {"tasks": [{"type": "sleep", "payload": "0.05"}
                                                              for _ in range(tasks)]})["ids"]
            done = _post(sender, "/v1/tasks/lookup", {"ids": ids, "wait_s": 60, "results": False}, timeout=90)
            states = [t["state"] for t in done["tasks"]]
            by_worker: dict[str, int] = {}
            for t in done["tasks"]:
                by_worker[t.get("worker") or "-"] = by_worker.get(t.get("worker") or "-", 0) + 1
            out.update(tasks=tasks, tasks_succeeded=states.count("completed"), task_workers=len(by_worker),
                       tasks_per_worker_max=max(by_worker.values()))
    except Exception as exc:  # reported with whatever was measured; the caller decides
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for nd in cluster.nodes:
            if nd.proc is not None and nd.proc.poll() is None:
                nd.proc.terminate()
        t_term = time.monotonic()
        # In time: exited within 20 s of SIGTERM. Late: exited later but within 60 s (100 nodes stopping at once on
        # 2 cores queue for a CPU). Hung: still running at 60 s (killed by cluster.close). Failed: a non-zero code.
        final: list[int | None] = []
        late_clean = 0
        for nd in cluster.nodes:
            if nd.proc is None:
                continue
            try:
                code = nd.proc.wait(timeout=max(0.1, t_term + 20 - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    code = nd.proc.wait(timeout=max(0.1, t_term + 60 - time.monotonic()))
                    late_clean += code == 0
                except subprocess.TimeoutExpired:
                    code = None
            final.append(code)
        out["exit_late_clean"] = late_clean
        if hosts is not None:
            totals: dict[str, int] = {}
            for host in hosts:
                for k, v in tcp_counters(host).items():
                    totals[k] = totals.get(k, 0) + v
            out["tcp_counters"] = totals
        out["exit_hung_or_failed"] = sum(1 for c in final if c != 0)
        out["exit_codes_nonzero"] = sum(1 for c in final if c is not None and c != 0)
        cluster.close()
        out.update(log_counts(cluster.nodes))
    return out


def top_functions(paths: list[Path], k: int = 20) -> dict[str, Any]:
    """py-spy's collapsed stacks -> share of samples per function, inclusive (on the stack) and self (on top)."""
    incl: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in (ln for p in paths if p.exists() for ln in p.read_text().splitlines()):
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
        own[frames[-1]] = own.get(frames[-1], 0) + c
    top = lambda d: [(f, round(100 * v / total, 1)) for f, v in sorted(d.items(), key=lambda kv: -kv[1])[:k]]
    return {"samples": total, "inclusive_pct": top(incl), "self_pct": top(own)}


def markdown_row(r: dict[str, Any]) -> str:
    return (f"| {r['nodes']} | {r.get('ready_s', '-')} s | {r.get('converged_s', '-')} s | "
            f"{r.get('idle_cpu_pct_mean', '-')} % (max {r.get('idle_cpu_pct_max', '-')}, all "
            f"{r.get('idle_cpu_pct_total', '-')}) | {r.get('peers_mean', '-')} | "
            f"{r.get('pruned_before_window', '-')} / {r.get('pruned_in_window', '-')} | "
            f"{r.get('rss_mib_mean', '-')} MiB "
            f"(max {r.get('rss_mib_max', '-')}) | "
            f"p50 {r.get('gossip_p50_ms', '-')} ms, max {r.get('gossip_max_ms', '-')} ms, "
            f"{r.get('gossip_missing', '-')}/{r.get('gossip_deliveries', '-')} missing"
            f"{' (' + str(r['gossip_unread']) + ' nodes never read)' if r.get('gossip_unread') else ''} | "
            f"{r.get('tasks_succeeded', '-')}/{r.get('tasks', '-')} on {r.get('task_workers', '-')} workers | "
            f"{r['error_lines']} / {r['traceback_lines']} | {r['auth_failures']} / {r['ping_closes']} | "
            f"{r['exit_hung_or_failed']} ({r['exit_late_clean']} late but clean) | {r['load_before']:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--settle", type=float, default=20.0, help="seconds idle after convergence before measuring")
    ap.add_argument("--window", type=float, default=20.0, help="CPU measurement window, seconds")
    ap.add_argument("--gossip", type=int, default=5, help="texts broadcast from one worker")
    ap.add_argument("--tasks", type=int, default=60, help="sleep tasks submitted at one worker (0: none)")
    ap.add_argument("--profile", action="store_true", help="py-spy workers during the idle window")
    ap.add_argument("--profile-nodes", type=int, default=1, help="how many workers py-spy records (--profile)")
    ap.add_argument("--profile-rate", type=int, default=50, help="py-spy samples per second (--profile)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs) and print its path")
    ap.add_argument("--netns", action="store_true",
                    help="every node in a network namespace of its own on one bridge (root; testing/testbed)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=YAML",
                    help="config value for every node, e.g. network.conn_high=64 (repeatable)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment variable for every node, e.g. P2P_FAST_LEAN_IMPORTS=0 (repeatable)")
    ap.add_argument("--env-b", action="append", default=[], metavar="NAME=VALUE",
                    help="environment variable for the even-numbered workers only (group B), to compare two "
                         "settings side by side under the same load: idle CPU is reported per group")
    args = ap.parse_args()
    settings = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    env = {k: v for k, _, v in (e.partition("=") for e in args.env)}
    env_b = {k: v for k, _, v in (e.partition("=") for e in args.env_b)}
    workdir = Path(tempfile.mkdtemp(prefix="p2p-scale-"))
    result = run_scale(workdir, args.nodes, netns=args.netns, settle=args.settle, window=args.window, gossip=args.gossip,
                       tasks=args.tasks, profile=args.profile, profile_rate=args.profile_rate,
                       profile_nodes=args.profile_nodes, settings=settings,
                       env=env,
                       env_b=env_b)
    print(json.dumps(result, sort_keys=True))
    print("| nodes | all ready | views converged | idle CPU per node | peers per node (sampled) "
          "| connections pruned above `high` before / in the idle window | RSS per node | gossip to every node | tasks "
          "| ERROR / Traceback | auth failures / ping closes | hung or failed exits | load before |")
    print(markdown_row(result))
    if args.keep:
        print("logs in", workdir)
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
