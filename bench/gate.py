#!/usr/bin/env python3
"""Benchmark regression gate: speed-up ratios measured in this run, compared with this machine's floors in
``bench/baseline.json``.

    python bench/gate.py                      # exit 1 (naming the ratio) if any ratio fell more than 25 %, or a
                                              # macro round lost messages (naming the round)
    python bench/gate.py --write-baseline     # measure 3 times, record the medians as this machine's baseline
                                              # (other machines' entries are kept)
    python bench/gate.py --skip-macro         # micro ratios only (no processes, ~12 s)

Floors are kept per machine (CPU model and core count, from ``/proc/cpuinfo``; ``bench/floors.py``). A machine
the file does not know is held, per ratio, to the lowest baseline of all recorded machines (the most conservative
floor), and the gate prints a note saying so.

Ratios, not absolute times, so the gate holds on a loaded or slower machine:

- ``micro.<workload>``: each compiled hot path over its pure-Python twin (``bench/micro/ratios.py``).
- ``macro.gossip_msgs_per_s``: gossip msg/s of our node's stack over stock py-libp2p's, 256 B, one publisher
  and one subscriber process per stack (``bench/macro/gossip_bench.py``), the publisher sending as fast as its
  outbound queue takes messages (so none is dropped: the loss-free capacity of the pair, measured in one trial
  instead of a rate search). Both pairs run at once, in alternating 1.5 s rounds, so a change in machine load
  hits both; the ratio is the median over the rounds.
- ``macro.gossip_cpu_per_msg``: stock's CPU seconds (publisher + subscriber, ``/proc``) per delivered message
  over ours, summed over the same rounds.

A ratio below ``(1 - tolerance) x baseline`` is measured once more before it counts as a regression (one noisy
sample does not fail the build, a real regression fails twice). A macro round that lost messages fails the gate at
once: the publisher waits for queue space, so a loss is a fault, and a median over the rounds would hide it. About
30 s on our 2-core machine (60 s when it re-measures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (HERE, HERE / "micro", HERE / "macro", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import floors  # noqa: E402  (bench/ is on sys.path when this runs as a script)
from floors import TOLERANCE, FloorsError  # noqa: E402

BASELINE = HERE / "baseline.json"
ROUNDS = 3  # alternating ours/stock capacity rounds; the msg/s ratio is their median
ROUND_SECONDS = 1.5


def measure_micro(names: list[str] | None = None) -> dict[str, float]:
    from ratios import measure

    return {f"micro.{k}": v for k, v in measure(names).items()}


Rounds = list[dict[str, dict]]


def measure_macro() -> tuple[dict[str, float], Rounds]:
    """Both macro ratios from one set of processes: a stock pair and an ours pair, measured in alternating rounds;
    and the rounds themselves (``sent``, ``lost`` per stack), for the lost-message check."""
    from gossip_bench import Trials, capacity, start_pairs

    pairs = start_pairs(["stock", "ours"])
    try:
        trials = {stack: Trials(pub, [sub]) for stack, (pub, sub) in pairs.items()}
        rounds: Rounds = []
        for _ in range(ROUNDS):
            rounds.append({stack: capacity(t, 256, ROUND_SECONDS) for stack, t in trials.items()})
    finally:
        for pub, sub in pairs.values():
            pub.close()
            sub.close()
    rate_ratios = [r["ours"]["msgs_per_s"] / max(r["stock"]["msgs_per_s"], 1.0) for r in rounds]
    cpu_per_msg = {stack: sum(sum(r[stack]["cpu"]) for r in rounds)
                   / max(1, sum(r[stack]["sent"] - r[stack]["lost"] for r in rounds)) for stack in trials}
    lost = {stack: sum(r[stack]["lost"] for r in rounds) for stack in trials}
    print("  gossip msg/s (256 B, publisher waits for queue space), rounds: "
          + "; ".join(f"ours {r['ours']['msgs_per_s']:.0f} stock {r['stock']['msgs_per_s']:.0f}" for r in rounds)
          + f"; CPU ms/msg (pub+sub): ours {cpu_per_msg['ours'] * 1000:.3f}, stock {cpu_per_msg['stock'] * 1000:.3f}"
          + (f"; LOST {lost}" if any(lost.values()) else ""), file=sys.stderr)
    return {
        "macro.gossip_msgs_per_s": round(statistics.median(rate_ratios), 2),
        "macro.gossip_cpu_per_msg": round(cpu_per_msg["stock"] / max(cpu_per_msg["ours"], 1e-9), 2),
    }, rounds


ROUND_WHAT = f"256 B capacity, {ROUND_SECONDS} s"


def measure_all(skip_macro: bool, lost: list[str]) -> dict[str, float]:
    """Every ratio; each macro round that lost messages is appended to ``lost`` (naming the round)."""
    out = measure_micro()
    if not skip_macro:
        ratios, rounds = measure_macro()
        out.update(ratios)
        lost += floors.lost_rounds(rounds, ROUND_WHAT)
    return out


def report(measured: dict[str, float], baseline: dict[str, float], tolerance: float) -> None:
    print(f"{'ratio':44s} {'baseline':>9s} {'floor':>7s} {'measured':>9s}")
    for name in sorted(set(baseline) | set(measured)):
        base = baseline.get(name)
        got = measured.get(name)
        floor = f"{base * (1 - tolerance):7.2f}" if base is not None else "      -"
        status = "" if base is None or got is None or got >= base * (1 - tolerance) else "  << REGRESSION"
        print(f"{name:44s} {base if base is not None else '-':>9} {floor} "
              f"{got if got is not None else '-':>9}{status}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write-baseline", action="store_true",
                    help="measure --runs times, record the medians as this machine's baseline (the other machines' "
                         "entries are kept; ratios a --skip-macro run lacks keep this machine's old values)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-macro", action="store_true")
    ap.add_argument("--baseline", type=Path, default=BASELINE, help="the floors file (default bench/baseline.json)")
    ap.add_argument("--cpuinfo", type=Path, default=Path("/proc/cpuinfo"),
                    help="where the machine's CPU model and cores are read (default /proc/cpuinfo)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    machine = floors.this_machine(args.cpuinfo)
    lost: list[str] = []

    if args.write_baseline:
        try:
            runs = [measure_all(args.skip_macro, lost) for _ in range(args.runs)]
        except ImportError as exc:
            print(f"gate: compiled hot paths not built ({exc}); run setup.py build_ext --inplace", file=sys.stderr)
            return 1
        if lost:
            for line in lost:
                print(f"gate: {line}", file=sys.stderr)
            print("gate: not writing a baseline from runs that lost messages", file=sys.stderr)
            return 1
        ratios = {name: round(statistics.median(r[name] for r in runs), 2) for name in runs[0]}
        how = (f"median of {args.runs} runs of `python bench/gate.py --write-baseline`, {time.strftime('%Y-%m-%d')}, "
               f"{sys.platform}, python {sys.version.split()[0]}, load average {_load_average()} at the end")
        try:
            old = floors.load(args.baseline) if args.baseline.exists() else None
        except FloorsError as exc:
            print(f"gate: {exc}; not overwriting it", file=sys.stderr)
            return 1
        doc = floors.record_machine(old, machine, how, ratios, runs)
        args.baseline.write_text(json.dumps(doc, indent=2) + "\n")
        report(ratios, ratios, TOLERANCE)
        print(f"wrote this machine's baseline ({machine}) to {args.baseline} ({time.monotonic() - t0:.0f} s)")
        return 0

    try:
        doc = floors.load(args.baseline)
        baseline, note = floors.baseline_for(doc, machine, str(args.baseline))
    except FloorsError as exc:
        print(f"gate: {exc}", file=sys.stderr)
        return 1
    if note:
        print(note, file=sys.stderr)
    tolerance = float(doc.get("tolerance", TOLERANCE))
    if args.skip_macro:
        baseline = {k: v for k, v in baseline.items() if not k.startswith("macro.")}
    from gossip_bench import PeerError

    try:
        measured = measure_all(args.skip_macro, lost)
    except ImportError as exc:
        print(f"gate: compiled hot paths not built ({exc}); run setup.py build_ext --inplace", file=sys.stderr)
        return 1
    except PeerError as exc:
        print(f"gate: the macro benchmark could not run: {exc}", file=sys.stderr)
        return 1
    low = floors.below_floor(measured, baseline, tolerance)
    if low and not lost:  # measure those once more: a real regression shows twice (a lost round fails anyway)
        print(f"gate: below the floor on a first measurement, measuring again: {', '.join(low)}", file=sys.stderr)
        micro_names = [n.removeprefix("micro.") for n in low if n.startswith("micro.")]
        again = measure_micro(micro_names) if micro_names else {}
        if any(n.startswith("macro.") for n in low):
            ratios, rounds = measure_macro()
            again.update(ratios)
            lost += floors.lost_rounds(rounds, ROUND_WHAT + ", measured again")
        for name in low:
            measured[name] = max(measured[name], again.get(name, measured[name]))
        low = floors.below_floor(measured, baseline, tolerance)
    report(measured, baseline, tolerance)
    took = time.monotonic() - t0
    for name in low:
        print(f"gate: REGRESSION: {name} = {measured[name]:.2f}, below {1 - tolerance:.0%} of its baseline "
              f"{baseline[name]:.2f} (floor {baseline[name] * (1 - tolerance):.2f}) on {machine}", file=sys.stderr)
    for line in lost:
        print(f"gate: LOST MESSAGES: {line}", file=sys.stderr)
    if low or lost:
        print(f"gate: FAILED ({took:.0f} s)", file=sys.stderr)
        return 1
    print(f"gate: ok, {len(measured)} ratios within {tolerance:.0%} of their floors in {args.baseline.name} "
          f"({machine}{', conservative default' if note else ''}; {took:.0f} s)")
    return 0


def _load_average() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
