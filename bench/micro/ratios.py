#!/usr/bin/env python3
"""Speed-up of every compiled hot path over its pure-Python twin, measured in one process with timeit.

    python bench/micro/ratios.py            # prints {"msgid.message_id_bytes": 3.1, ...} as JSON
    python bench/micro/ratios.py -v seen.SeenCache.has_hit   # also ns per call on stderr; only that workload
    from ratios import measure; measure()   # the same dict, for a regression gate

Each ratio is min-of-repeats time of the twin / that of the compiled module for one call (``ext_workloads.py``).
About 10 s in all on our 2-core machine. Exit status 2 if a compiled module is not built.
"""

from __future__ import annotations

import gc
import json
import sys
import timeit
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE), str(_HERE.parent.parent)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from ext_workloads import WORKLOADS, Workload, implementations  # noqa: E402

RUN_SECONDS = 0.03  # one timed run
REPEATS = 5


def _calibrated(workload: Workload, module) -> tuple[timeit.Timer, int]:
    """A timer for ``workload`` on ``module`` and the statement count that makes one run ~RUN_SECONDS."""
    timer = timeit.Timer(workload.stmt, workload.setup, globals=workload.build(module))
    number = 100
    while True:
        took = timer.timeit(number)
        if took >= RUN_SECONDS / 4 or (workload.max_number and number * 4 > workload.max_number):
            break
        number *= 4
    number = max(1, int(number * RUN_SECONDS / max(took, 1e-9)))
    if workload.max_number:
        number = min(number, workload.max_number)
    return timer, number


def _per_call(workload: Workload, compiled, twin) -> tuple[float, float]:
    """Seconds per statement (compiled, twin): best of REPEATS runs each, the two alternating so that load from
    other processes hits both alike."""
    (timer_c, n_c), (timer_py, n_py) = _calibrated(workload, compiled), _calibrated(workload, twin)
    best_c = best_py = float("inf")
    for _ in range(REPEATS):
        best_c = min(best_c, timer_c.timeit(n_c) / n_c)
        best_py = min(best_py, timer_py.timeit(n_py) / n_py)
    return best_c, best_py


def measure(names: list[str] | None = None) -> dict[str, float]:
    """{workload key: twin time / compiled time}; ``names`` limits it to those keys."""
    return {key: round(py / c, 2) for key, (c, py) in measure_times(names).items()}


def measure_times(names: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """{workload key: (compiled, twin) seconds per call}."""
    times: dict[str, tuple[float, float]] = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # timeit does this per run anyway; also keep collections out of the calibration
    try:
        for workload in WORKLOADS:
            if names and workload.key not in names:
                continue
            impls = implementations(workload.concern)
            times[workload.key] = _per_call(workload, impls["c"], impls["py"])
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    names = [a for a in argv if a != "-v"] or None
    try:
        times = measure_times(names)
    except ImportError as exc:
        print(f"compiled hot paths not built ({exc}); run setup.py build_ext --inplace", file=sys.stderr)
        return 2
    if verbose:  # a table on stderr, so stdout stays JSON
        for key, (c, py) in times.items():
            print(f"{key:40s} c {c * 1e9:9.0f} ns   py {py * 1e9:9.0f} ns   x{py / c:6.2f}", file=sys.stderr)
    print(json.dumps({key: round(py / c, 2) for key, (c, py) in times.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
