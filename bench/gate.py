#!/usr/bin/env python3
"""Benchmark regression gate: speed-up ratios measured in this run, compared with ``bench/baseline.json``.

    python bench/gate.py                      # exit 1 (naming the ratio) if any ratio fell more than 25 %
    python bench/gate.py --write-baseline     # measure 3 times, write the median of each ratio as the baseline
    python bench/gate.py --write-baseline --add-machine   # per ratio, the lower of the baseline and this median
    python bench/gate.py --skip-macro         # micro ratios only (no processes, ~12 s)

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
sample does not fail the build, a real regression fails twice). About 30 s on our 2-core machine (60 s when it
re-measures).
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
for _p in (HERE / "micro", HERE / "macro", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

BASELINE = HERE / "baseline.json"
TOLERANCE = 0.25
ROUNDS = 3  # alternating ours/stock capacity rounds; the msg/s ratio is their median
ROUND_SECONDS = 1.5


def measure_micro(names: list[str] | None = None) -> dict[str, float]:
    from ratios import measure

    return {f"micro.{k}": v for k, v in measure(names).items()}


def measure_macro() -> dict[str, float]:
    """Both macro ratios from one set of processes: a stock pair and an ours pair, measured in alternating rounds."""
    from gossip_bench import Trials, capacity, start_pairs

    pairs = start_pairs(["stock", "ours"])
    try:
        trials = {stack: Trials(pub, [sub]) for stack, (pub, sub) in pairs.items()}
        rounds: list[dict[str, dict]] = []
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
    }


def measure_all(skip_macro: bool) -> dict[str, float]:
    out = measure_micro()
    if not skip_macro:
        out.update(measure_macro())
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu unknown"


def compare(measured: dict[str, float], baseline: dict[str, float], tolerance: float) -> list[str]:
    """Names of the ratios below their floor."""
    return [name for name, base in baseline.items()
            if name in measured and measured[name] < base * (1 - tolerance)]


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
    ap.add_argument("--write-baseline", action="store_true", help="measure --runs times, write medians")
    ap.add_argument("--add-machine", action="store_true",
                    help="with --write-baseline: keep, per ratio, the lower of the existing baseline and this "
                         "machine's median (CI machines of 'the same kind' differ in CPU and memory, and a ratio "
                         "bound by dict and memory costs moves with them; the gate must hold on each)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-macro", action="store_true")
    ap.add_argument("--baseline", type=Path, default=BASELINE)
    args = ap.parse_args(argv)
    t0 = time.monotonic()

    if args.write_baseline:
        runs = [measure_all(args.skip_macro) for _ in range(args.runs)]
        ratios = {name: round(statistics.median(r[name] for r in runs), 2) for name in runs[0]}
        how = (f"median of {args.runs} runs of `python bench/gate.py --write-baseline`, {time.strftime('%Y-%m-%d')}, "
               f"{sys.platform}, python {sys.version.split()[0]}, {_cpu_model()}")
        if args.add_machine and args.baseline.exists():
            old = json.loads(args.baseline.read_text())
            machines = old.get("machines") or [{"how": old["how"], "ratios": old["ratios"], "runs": old["runs"]}]
            machines.append({"how": how, "ratios": ratios, "runs": runs})
            # Every name any machine measured: a --skip-macro run must not drop the macro ratios.
            names = dict.fromkeys(name for m in machines for name in m["ratios"])
            ratios = {name: min(m["ratios"][name] for m in machines if name in m["ratios"]) for name in names}
            doc = {"tolerance": TOLERANCE, "ratios": ratios,
                   "how": "per ratio, the lowest of the machines' medians below (`--write-baseline --add-machine`)",
                   "machines": machines}
        else:
            doc = {"tolerance": TOLERANCE, "ratios": ratios, "how": how, "runs": runs}
        args.baseline.write_text(json.dumps(doc, indent=2) + "\n")
        report(ratios, ratios, TOLERANCE)
        print(f"wrote {args.baseline} ({time.monotonic() - t0:.0f} s)")
        return 0

    try:
        doc = json.loads(args.baseline.read_text())
    except FileNotFoundError:
        print(f"gate: no baseline at {args.baseline}; run with --write-baseline", file=sys.stderr)
        return 1
    baseline: dict[str, float] = doc["ratios"]
    tolerance = float(doc.get("tolerance", TOLERANCE))
    if args.skip_macro:
        baseline = {k: v for k, v in baseline.items() if not k.startswith("macro.")}
    from gossip_bench import PeerError

    try:
        measured = measure_all(args.skip_macro)
    except ImportError as exc:
        print(f"gate: compiled hot paths not built ({exc}); run setup.py build_ext --inplace", file=sys.stderr)
        return 1
    except PeerError as exc:
        print(f"gate: the macro benchmark could not run: {exc}", file=sys.stderr)
        return 1
    low = compare(measured, baseline, tolerance)
    if low:  # measure those once more: a real regression shows twice
        print(f"gate: below the floor on a first measurement, measuring again: {', '.join(low)}", file=sys.stderr)
        micro_names = [n.removeprefix("micro.") for n in low if n.startswith("micro.")]
        again = measure_micro(micro_names) if micro_names else {}
        if any(n.startswith("macro.") for n in low):
            again.update(measure_macro())
        for name in low:
            measured[name] = max(measured[name], again.get(name, measured[name]))
        low = compare(measured, baseline, tolerance)
    report(measured, baseline, tolerance)
    took = time.monotonic() - t0
    if low:
        for name in low:
            print(f"gate: REGRESSION: {name} = {measured[name]:.2f}, below {1 - tolerance:.0%} of its baseline "
                  f"{baseline[name]:.2f} (floor {baseline[name] * (1 - tolerance):.2f})", file=sys.stderr)
        print(f"gate: FAILED ({took:.0f} s)", file=sys.stderr)
        return 1
    print(f"gate: ok, {len(measured)} ratios within {tolerance:.0%} of {args.baseline.name} ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
