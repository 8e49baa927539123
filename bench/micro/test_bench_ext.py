"""pytest-benchmark: every hot path, compiled vs twin, one group per operation (``ext_workloads.py``).

    pytest -p no:cacheprovider bench/micro --benchmark-group-by=group --benchmark-columns=min,median,ops

Each round runs the operation ``batch`` times (1000 unless the workload says otherwise), after its untimed setup.
``ratios.py`` gives the same comparison as one JSON dict without pytest.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_benchmark")

from ext_workloads import WORKLOADS, Workload, implementations  # noqa: E402


def _impl(concern: str, which: str):
    try:
        return implementations(concern)[which]
    except ImportError:
        pytest.skip(f"p2p_fast._ext._{concern}_c is not built")


@pytest.mark.parametrize("which", ["c", "py"])
@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.key for w in WORKLOADS])
def test_hot_path(benchmark, workload: Workload, which: str) -> None:
    ns = workload.build(_impl(workload.concern, which))
    ns["_range"] = range(workload.batch)
    exec(f"def _batch():\n    for _ in _range:\n        {workload.stmt}\n", ns)
    benchmark.group = workload.key
    benchmark.extra_info["statements_per_round"] = workload.batch
    benchmark.pedantic(ns["_batch"], setup=lambda: exec(workload.setup, ns), rounds=25, warmup_rounds=2)
