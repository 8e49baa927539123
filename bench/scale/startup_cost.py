"""Start-up CPU (import + start) and idle RSS of one node, with and without ``p2p_fast.stack.patches.lean_imports``.

    .venv/bin/python bench/scale/startup_cost.py [--runs 5 --settle 10]

A bootstrap (``node/bootstrap.yaml``) runs throughout; each run starts one worker (``node/worker.yaml``, on 127.0.0.1,
its own data dir, bootstrapping from it), alternating ``P2P_FAST_LEAN_IMPORTS=1`` and ``=0``. Start-up CPU is the
process's utime+stime when its runtime file appears (listening, HTTP up: the node has started); RSS is VmRSS after
``--settle`` seconds connected. With ``--status``, the bench then asks the node for ``GET /v1/status`` (answered by
``api.lean_routes``) and reads VmRSS again 2 s later (``rss_v1_mib``): the memory of a node that is watched; then for
``GET /v1/tasks``, which builds the FastAPI app behind the HTTP front, and again 2 s later (``rss_app_mib``): a node
whose whole ``/v1`` API has been used. Prints the median and range of each, and the lean/stock ratio of the medians.

Byte-code: an installed node (the wheel in the image, ``pip install``) has its modules compiled, so before the runs
the bench compiles ``p2p_fast`` (``compileall``, into the ``__pycache__`` beside the sources, as ``pip`` does); a
checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (this machine, the image's environment) otherwise compiles every one of
its ~120 modules on every start, about 0.1 s. ``--no-compile`` leaves the sources as they are (the figures before
2026-12-06 14:00 in bench/RESULTS.md were taken so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "bench" / "scale"))

from scale_bench import Cluster, _get, _role_config, wait_until  # noqa: E402

from bench.procstat import CLK_TCK, cpu_ticks, rss_mib  # noqa: E402

FLAGS = ["--listen-host", "127.0.0.1", "--listen-port", "0", "--http-listen", "127.0.0.1:0", "--console", "off"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--lean-only", action="store_true", help="runs with lean imports only (no stock comparison)")
    ap.add_argument("--status", action="store_true",
                    help="after the idle RSS, GET /v1/status and read RSS again 2 s later (rss_v1_mib); then "
                         "GET /v1/tasks (the full FastAPI app) and again (rss_app_mib)")
    ap.add_argument("--no-compile", action="store_true", help="do not compile p2p_fast's byte-code before the runs")
    args = ap.parse_args()
    if not args.no_compile:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "p2p_fast")], env=env, check=True)
    work = Path(tempfile.mkdtemp(prefix="p2p-startup-"))
    cluster = Cluster(work)
    figures: dict[str, dict[str, list[float]]] = {
        lean: {"cpu_s": [], "rss_mib": [], "rss_v1_mib": [], "rss_app_mib": []} for lean in ("1", "0")}
    try:
        boot = cluster.add("boot", _role_config("bootstrap"), extra_args=FLAGS).start().wait_started(60)
        for i in range(args.runs * (1 if args.lean_only else 2)):
            lean = "1" if i % 2 == 0 or args.lean_only else "0"
            w = cluster.add(f"w{i}", _role_config("worker"), extra_args=FLAGS + ["--bootstrap", boot.addr()],
                            env={"P2P_FAST_LEAN_IMPORTS": lean}).start()
            pid = w.proc.pid  # type: ignore[union-attr]
            wait_until(lambda: w.runtime() is not None, 60, f"{w.name} to start", interval=0.02)
            figures[lean]["cpu_s"].append(cpu_ticks(pid) / CLK_TCK)
            time.sleep(args.settle)
            figures[lean]["rss_mib"].append(rss_mib(pid))
            if args.status:
                assert "peer_id" in _get(w, "/v1/status"), "GET /v1/status gave no status"
                time.sleep(2.0)
                figures[lean]["rss_v1_mib"].append(rss_mib(pid))
                assert "tasks" in _get(w, "/v1/tasks"), "GET /v1/tasks gave no task list"
                time.sleep(2.0)
                figures[lean]["rss_app_mib"].append(rss_mib(pid))
            w.stop()
    finally:
        cluster.close()
    out = {}
    for lean, doc in figures.items():
        if not doc["cpu_s"]:
            continue
        for k, vals in doc.items():
            if not vals:
                continue
            out[f"{k}_{'lean' if lean == '1' else 'stock'}"] = {
                "median": round(statistics.median(vals), 3), "min": round(min(vals), 3), "max": round(max(vals), 3)}
    if args.lean_only:
        print(json.dumps(out, sort_keys=True))
        return
    out["cpu_ratio_lean_to_stock"] = round(out["cpu_s_lean"]["median"] / out["cpu_s_stock"]["median"], 2)
    out["rss_ratio_lean_to_stock"] = round(out["rss_mib_lean"]["median"] / out["rss_mib_stock"]["median"], 2)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
