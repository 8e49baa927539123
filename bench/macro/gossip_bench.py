#!/usr/bin/env python3
"""Macro benchmarks: our node's stack vs stock py-libp2p vs go-libp2p, every peer in its own process.

    python bench/macro/gossip_bench.py                 # everything, all three stacks (~5 min)
    python bench/macro/gossip_bench.py --quick         # 256 B throughput, shorter trials, short line (<= 60 s)
    python bench/macro/gossip_bench.py --stacks ours,stock --only throughput --sizes 256 --json out.json
    python bench/macro/gossip_bench.py --runs 3         # three rounds: median (min-max, runs) per figure

Figures (each stack's peers are ``bench/macro/peer.py`` processes; see there for how each stack is configured):

- **throughput**: 1 publisher -> 1 subscriber, both subscribed, messages of 256 B and 4 KiB. Loss-free msg/s: the
  publisher sends ``count`` messages paced at a rate; a trial passes when every message arrives. The rate grows
  x1.5 until a trial loses messages, then bisects. The figure is the best delivered rate of a passing trial
  (messages / (last arrival - first send)), so a publisher that cannot keep pace does not inflate it.
- **capacity** (python stacks): one 2 s trial in which the publisher sends as fast as its outbound queue takes
  messages (``peer.py flood``: it waits while a peer queue holds 16 RPCs, so none is dropped for want of space):
  the msg/s the pair sustains, and CPU per delivered message at that load.
- **cpu**: CPU seconds (utime + stime from ``/proc/<pid>/stat``) per delivered message, publisher and subscriber,
  at full load (above) and over one trial at a fixed rate every stack sustains (``--cpu-rate``, 256 B), where
  per-wakeup costs are not shared by several messages. For go the process is the daemon (the Python driver that
  feeds it is not counted).
- **line**: 6 peers in a line (0-1-2-3-4-5), all subscribed; peer 0 publishes at 50 msg/s, latency at peer 5.
- **dial**: TCP + Noise + Yamux connect time, a fresh dialer each time, median.
- **rss**: VmRSS of a peer (host + gossipsub + DHT) connected and subscribed, after settling.

Prints a Markdown table and (``--json``) the raw figures. Exit 1 if a peer fails.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:  # run as a script: testing/ is the checkout's, never installed
    sys.path.insert(0, str(ROOT))

from bench import procstat  # noqa: E402
from testing.interop import find_p2pd  # noqa: E402

TOPIC = "bench/gossip"
STACKS = ("ours", "stock", "go")
WARM_UP_TRIAL = 1_000_000  # trial ids of warm-up rounds, apart from the measured ones


class PeerError(RuntimeError):
    pass


class Peer:
    """A ``peer.py`` process and a blocking request/response client for it."""

    def __init__(self, stack: str, name: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.stack = stack
        self.name = name
        argv = [sys.executable, str(HERE / "peer.py"), "--stack", stack]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, **(env or {})}, cwd=str(ROOT),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._readers:
            t.start()
        self.pid = self.proc.pid
        self.peer_id = self.addr = ""
        if wait:
            self.wait_ready()

    def wait_ready(self) -> "Peer":
        """Wait for the ready line (so several peers can start at once: construct with ``wait=False``)."""
        ready = self._next(60, "start")
        self.pid = ready["pid"]
        self.peer_id = ready["peer_id"]
        self.addr = ready["addr"]
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at EOF, by the thread that reads it
            for line in self.proc.stdout:
                self._lines.put(line)
        self._lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self._stderr.append(line)
                del self._stderr[:-200]

    def _next(self, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise PeerError(f"{self.stack}/{self.name}: no answer to {what} within {timeout} s"
                                f"\n{''.join(self._stderr[-30:])}") from None
            if line is None:
                raise PeerError(f"{self.stack}/{self.name} exited during {what}\n{''.join(self._stderr[-30:])}")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def call(self, cmd: str, timeout: float = 30, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        out = self._next(timeout, cmd)
        if not out.get("ok"):
            raise PeerError(f"{self.stack}/{self.name} {cmd}: {out.get('error')}")
        return out

    def cpu(self) -> float:
        """CPU seconds (user + system) of the measured process so far."""
        return procstat.cpu_s(self.pid)

    def rss_mib(self) -> float:
        return procstat.rss_mib(self.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:  # the peer died with our last line unread
                pass
        for t in self._readers:  # they close stdout and stderr at EOF, which the exit brings
            t.join(timeout=5)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise PeerError(f"timed out after {timeout:.0f} s waiting for {what}")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


class Trials:
    """Numbered trials between one publisher and its receivers; each trial id is fresh so stragglers never count."""

    def __init__(self, pub: Peer, receivers: list[Peer], first_id: int = 1) -> None:
        self.pub = pub
        self.receivers = receivers
        self.next_id = first_id

    def run(self, rate: float, count: int, size: int, drain: float = 1.0) -> dict[str, Any]:
        trial = self.next_id
        self.next_id += 1
        cpu0 = [p.cpu() for p in (self.pub, *self.receivers)]
        sent = self.pub.call("publish", timeout=count / rate + 60, topic=TOPIC, trial=trial, count=count, rate=rate,
                             size=size)
        # Wait until every receiver has all, or none made progress for ``drain`` seconds.
        last_counts: list[int] = [-1] * len(self.receivers)
        stats: list[dict[str, Any]] = [{} for _ in self.receivers]
        idle_since = time.monotonic()
        while True:
            stats = [r.call("stats", trial=trial) for r in self.receivers]
            counts = [s["received"] for s in stats]
            if all(c >= count for c in counts):
                break
            if counts != last_counts:
                last_counts, idle_since = counts, time.monotonic()
            elif time.monotonic() - idle_since > drain:
                break
            time.sleep(0.05)
        cpu1 = [p.cpu() for p in (self.pub, *self.receivers)]
        return {"trial": trial, "rate": rate, "count": count, "publish_elapsed": sent["elapsed"], "stats": stats,
                "cpu": [b - a for a, b in zip(cpu0, cpu1)]}


def capacity(trials: Trials, size: int, seconds: float) -> dict[str, Any]:
    """Messages per second the pair sustains when the publisher waits for outbound queue space (``flood``): one
    trial of ``seconds``; ``lost`` counts messages that still did not arrive (should be 0)."""
    trial = trials.next_id
    trials.next_id += 1
    cpu0 = [p.cpu() for p in (trials.pub, *trials.receivers)]
    sent = trials.pub.call("flood", timeout=seconds + 60, topic=TOPIC, trial=trial, seconds=seconds, size=size)["sent"]
    s = wait_for_stats(trials.receivers[0], trial, sent, drain=1.0)
    cpu1 = [p.cpu() for p in (trials.pub, *trials.receivers)]
    span = (s["last_arrival"] or 0) - (s["first_sent"] or 0)
    return {"msgs_per_s": s["received"] / span if span > 0 else 0.0, "sent": sent, "lost": sent - s["received"],
            "cpu": [b - a for a, b in zip(cpu0, cpu1)]}


def wait_for_stats(receiver: Peer, trial: int, count: int, drain: float, first: float = 15.0) -> dict[str, Any]:
    """The receiver's stats for ``trial`` once it has ``count`` messages or made no progress for ``drain`` s. Before
    the first message arrives it waits up to ``first`` s: a receiver descheduled on a loaded machine (a full test
    run) had not read its first message 1 s after a flood ended, and every message counted as lost."""
    last, idle_since = -1, time.monotonic()
    while True:
        s = receiver.call("stats", trial=trial)
        if s["received"] >= count:
            return s
        if s["received"] != last:
            last, idle_since = s["received"], time.monotonic()
        elif time.monotonic() - idle_since > (drain if s["received"] else first):
            return s
        time.sleep(0.05)


def delivered_rate(result: dict[str, Any]) -> float:
    s = result["stats"][0]
    span = (s["last_arrival"] or 0) - (s["first_sent"] or 0)
    return result["count"] / span if span > 0 else float("nan")


class RateSearch:
    """The loss-free rate search for one publisher/subscriber pair, one trial at a time (so callers can interleave
    several pairs and expose them to the same machine load): rates grow x1.5 until a trial loses messages, then
    bisect between the best passing and the lowest failing rate until they are within 12 %."""

    def __init__(self, trials: Trials, size: int, start: float, seconds: float, max_trials: int,
                 log: list[dict[str, Any]] | None = None) -> None:
        self.trials, self.size, self.seconds, self.max_trials = trials, size, seconds, max_trials
        self.rate, self.lo, self.hi, self.best = start, 0.0, None, 0.0
        self.done_trials = 0
        self.log = log if log is not None else []
        self.cpu_s = [0.0, 0.0]  # publisher, subscriber CPU over passing trials
        self.delivered = 0  # messages delivered in passing trials

    @property
    def done(self) -> bool:
        return self.done_trials >= self.max_trials or (
            self.hi is not None and self.lo > 0 and (self.hi - self.lo) / self.hi < 0.12)

    def step(self) -> None:
        rate = self.rate
        count = max(150, int(rate * self.seconds))
        r = self.trials.run(rate, count, self.size)
        self.done_trials += 1
        received = r["stats"][0]["received"]
        ok = received == count
        got = delivered_rate(r) if ok else 0.0
        self.log.append({"size": self.size, "rate": round(rate), "count": count, "received": received,
                         "delivered_per_s": round(got, 1), "pass": ok})
        if ok:
            self.best = max(self.best, got)
            self.cpu_s = [a + b for a, b in zip(self.cpu_s, r["cpu"])]
            self.delivered += count
            self.lo = rate
            self.rate = rate * 1.5 if self.hi is None else (self.lo + self.hi) / 2
        else:
            self.hi = rate
            self.rate = (self.lo + self.hi) / 2 if self.lo else rate / 2
            time.sleep(0.5)  # let queues drain before the next trial


def loss_free_rate(trials: Trials, size: int, start: float, seconds: float, max_trials: int,
                   log: list[dict[str, Any]]) -> float:
    search = RateSearch(trials, size, start, seconds, max_trials, log)
    while not search.done:
        search.step()
    return search.best


START_RATE = {"ours": 800, "stock": 300, "go": 1200}


def start_pairs(stacks: list[str]) -> dict[str, tuple[Peer, Peer]]:
    """``start_pair`` for several stacks, their processes started at once."""
    peers: list[Peer] = []
    try:
        for stack in stacks:
            peers += [Peer(stack, "pub", wait=False), Peer(stack, "sub", wait=False)]
        for p in peers:
            p.wait_ready()
        out = {}
        for i, stack in enumerate(stacks):
            out[stack] = start_pair(stack, peers[2 * i], peers[2 * i + 1])
        return out
    except BaseException:
        for p in peers:
            p.close()
        raise


def start_pair(stack: str, pub: Peer | None = None, sub: Peer | None = None) -> tuple[Peer, Peer]:
    """A subscriber and a publisher, connected, both subscribed to TOPIC, mesh formed."""
    try:
        sub = sub or Peer(stack, "sub")
        pub = pub or Peer(stack, "pub")
    except BaseException:
        if sub is not None:
            sub.close()
        raise
    try:
        pub.call("connect", addr=sub.addr)
        sub.call("subscribe", topic=TOPIC)
        pub.call("subscribe", topic=TOPIC)
        wait_for(lambda: pub.call("topic_peers", topic=TOPIC)["mesh"] >= 1
                 and sub.call("topic_peers", topic=TOPIC)["mesh"] >= 1, 20, f"{stack} mesh")
        Trials(pub, [sub], first_id=WARM_UP_TRIAL).run(100, 50, 256)
    except BaseException:
        pub.close()
        sub.close()
        raise
    return pub, sub


def bench_pair(stack: str, sizes: list[int], quick: bool, cpu_rate: float, out: dict[str, Any]) -> None:
    pub, sub = start_pair(stack)
    try:
        time.sleep(1.0)
        out["rss_mib"] = round(sub.rss_mib(), 1)
        trials = Trials(pub, [sub])
        log: list[dict[str, Any]] = []
        out["trials"] = log
        start = START_RATE[stack]
        for size in sizes:
            seconds, max_trials = (1.0, 6) if quick else (1.5, 9)
            rate = loss_free_rate(trials, size, start if size <= 1024 else start * 0.8, seconds, max_trials, log)
            out[f"msgs_per_s_{size}"] = round(rate)
        if stack != "go":  # the daemon's queue is not visible to its driver
            cap = capacity(trials, 256, 1.0 if quick else 2.0)
            delivered = max(1, cap["sent"] - cap["lost"])
            out["capacity_256"] = round(cap["msgs_per_s"])
            out["capacity_lost"] = cap["lost"]
            out["capacity_cpu_ms_pub"] = round(cap["cpu"][0] / delivered * 1000, 3)
            out["capacity_cpu_ms_sub"] = round(cap["cpu"][1] / delivered * 1000, 3)
        if not quick:
            r = trials.run(cpu_rate, int(cpu_rate * 3), 256, drain=2.0)
            delivered = r["stats"][0]["received"]
            out["cpu_rate"] = cpu_rate
            out["cpu_delivered"] = delivered
            out["cpu_ms_per_msg_pub"] = round(r["cpu"][0] / max(1, delivered) * 1000, 3)
            out["cpu_ms_per_msg_sub"] = round(r["cpu"][1] / max(1, delivered) * 1000, 3)
    finally:
        pub.close()
        sub.close()


def bench_line(stack: str, n_nodes: int, rate: float, count: int, out: dict[str, Any]) -> None:
    peers: list[Peer] = []
    try:
        for i in range(n_nodes):
            peers.append(Peer(stack, f"n{i}"))
        for a, b in zip(peers, peers[1:]):
            a.call("connect", addr=b.addr)
        for p in peers:
            p.call("subscribe", topic=TOPIC)
        for i, p in enumerate(peers):
            need = 1 if i in (0, n_nodes - 1) else 2
            wait_for(lambda p=p, need=need: p.call("topic_peers", topic=TOPIC)["mesh"] >= need, 30,
                     f"{stack} line mesh at {p.name}")
        trials = Trials(peers[0], [peers[-1]])
        warm = Trials(peers[0], [peers[-1]], first_id=WARM_UP_TRIAL)
        wait_for(lambda: warm.run(20, 10, 256, drain=0.5)["stats"][0]["received"] == 10, 30,
                 f"{stack} line warm-up")
        r = trials.run(rate, count, 256, drain=3.0)
        lat = r["stats"][0]["latencies"]
        out["line_p50_ms"] = round(pct(lat, 0.5) * 1000, 1)
        out["line_p99_ms"] = round(pct(lat, 0.99) * 1000, 1)
        out["line_received"] = f"{len(lat)}/{count}"
    finally:
        for p in peers:
            p.close()


def bench_dial(stack: str, n: int, out: dict[str, Any]) -> None:
    target = Peer(stack, "target")
    dialer = Peer(stack, "dialer")
    try:
        seconds = dialer.call("dial", timeout=120, addr=target.addr, n=n)["seconds"]
        out["dial_ms"] = round(statistics.median(seconds) * 1000, 1)
    finally:
        dialer.close()
        target.close()


def go_available() -> bool:
    return find_p2pd() is not None


ROWS = [
    ("gossip 1->1, loss-free msg/s, 256 B", "msgs_per_s_256", "{:.0f}"),
    ("gossip 1->1, loss-free msg/s, 4 KiB", "msgs_per_s_4096", "{:.0f}"),
    ("gossip 1->1 capacity msg/s, 256 B, publisher waits for queue space", "capacity_256", "{:.0f}"),
    ("CPU ms per delivered msg at that capacity, publisher", "capacity_cpu_ms_pub", "{:.3f}"),
    ("CPU ms per delivered msg at that capacity, subscriber", "capacity_cpu_ms_sub", "{:.3f}"),
    ("CPU ms per delivered msg at 250 msg/s, publisher", "cpu_ms_per_msg_pub", "{:.3f}"),
    ("CPU ms per delivered msg at 250 msg/s, subscriber", "cpu_ms_per_msg_sub", "{:.3f}"),
    ("6-node line, 50 msg/s, far end p50 ms", "line_p50_ms", "{:.1f}"),
    ("6-node line, 50 msg/s, far end p99 ms", "line_p99_ms", "{:.1f}"),
    ("6-node line, delivered", "line_received", "{}"),
    ("dial (TCP+Noise+Yamux) median ms", "dial_ms", "{:.1f}"),
    ("idle RSS MiB (host+gossipsub+DHT)", "rss_mib", "{:.1f}"),
]


def _cell(values: list[Any], fmt: str) -> str:
    """One run: the value; several: median (min-max, n), as bench/RESULTS.md writes its figures."""
    if not values:
        return "-"
    if len(values) == 1 or not all(isinstance(v, (int, float)) for v in values):
        return fmt.format(values[0]) if len(values) == 1 else " / ".join(fmt.format(v) for v in values)
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))}, {len(values)})"


def table(runs: list[dict[str, dict[str, Any]]]) -> str:
    stacks = list(runs[0])
    names = {"ours": "p2p-fast", "stock": "stock py-libp2p 0.8.1", "go": "go-libp2p (p2pd)"}
    lines = ["| metric | " + " | ".join(names[s] for s in stacks) + " |", "| --- |" + " --- |" * len(stacks)]
    for label, key, fmt in ROWS:
        if not any(key in run[s] for run in runs for s in stacks):
            continue
        cells = [_cell([run[s][key] for run in runs if key in run[s]], fmt) for s in stacks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "ours" in stacks and "stock" in stacks:
        for key in ("msgs_per_s_256", "msgs_per_s_4096"):
            ratios = [run["ours"][key] / run["stock"][key] for run in runs
                      if run["stock"].get(key) and run["ours"].get(key)]
            if ratios:
                lines.append(f"\nours / stock, {key}: " + ", ".join(f"x{r:.2f}" for r in ratios))
    return "\n".join(lines)


def load_average() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 B throughput, short trials, short line; <= 60 s")
    ap.add_argument("--stacks", default=",".join(STACKS))
    ap.add_argument("--only", default="throughput,line,dial", help="comma list of throughput,line,dial")
    ap.add_argument("--sizes", default=None, help="comma list of payload sizes (default 256,4096; quick 256)")
    ap.add_argument("--cpu-rate", type=float, default=250.0)
    ap.add_argument("--runs", type=int, default=1, help="repeat everything; the table shows median (min-max, n)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    stacks = [s for s in args.stacks.split(",") if s]
    if "go" in stacks and not go_available():
        print("go-libp2p daemon not found (scripts/fetch-p2pd.sh): go column skipped", file=sys.stderr)
        stacks.remove("go")
    only = set(args.only.split(","))
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([256] if args.quick else [256, 4096])
    runs: list[dict[str, dict[str, Any]]] = []
    t0 = time.monotonic()
    loads = [load_average()]
    try:
        for i in range(args.runs):
            results: dict[str, dict[str, Any]] = {}
            for stack in stacks:
                out = results.setdefault(stack, {})
                if "throughput" in only:
                    bench_pair(stack, sizes, args.quick, args.cpu_rate, out)
                if "line" in only:
                    bench_line(stack, 6, 50.0, 50 if args.quick else 200, out)
                if "dial" in only and not args.quick:
                    bench_dial(stack, 10, out)
                print(f"[{time.monotonic() - t0:5.1f}s] run {i + 1} {stack}: "
                      + json.dumps({k: v for k, v in out.items() if k != "trials"}), file=sys.stderr)
            runs.append(results)
            loads.append(load_average())
    except PeerError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(table(runs))
    print(f"\n({time.monotonic() - t0:.0f} s; python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"load average 1/5/15 min at start and after each run: {'; '.join(loads)})")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "load": loads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
