"""Summarise a locust run of stress/locustfile.py from its CSV files; exit 1 when too many tasks failed.

    python stress/summary.py PREFIX [--max-failure-rate PERCENT] [--row "task compute"]

Reads PREFIX_stats.csv (and PREFIX_stats_history.csv for the run's duration), prints the end-to-end task row:
tasks, completed tasks per second, p50/p95/p99 latency and the failure rate, plus the HTTP rows. The percentiles are
locust's (rounded to 2 significant digits above 100 ms).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _duration(prefix: str) -> float | None:
    hist = Path(f"{prefix}_stats_history.csv")
    if not hist.exists():
        return None
    stamps = [int(r["Timestamp"]) for r in _rows(hist) if r.get("Timestamp", "").isdigit()]
    return float(max(stamps) - min(stamps)) if len(stamps) > 1 else None


def summarise(prefix: str, row_name: str | None = None) -> dict[str, float | int | str]:
    rows = _rows(Path(f"{prefix}_stats.csv"))
    tasks = [r for r in rows if r["Type"] == "TASK" and (row_name is None or r["Name"] == row_name)]
    if not tasks:
        raise SystemExit(f"summary.py: no TASK row in {prefix}_stats.csv: no task was submitted")
    r = tasks[0]
    count, failures = int(r["Request Count"]), int(r["Failure Count"])
    duration = _duration(prefix)
    rps = float(r["Requests/s"])
    completed_per_s = (count - failures) / duration if duration else rps * (count - failures) / max(count, 1)
    return {
        "row": r["Name"], "tasks": count, "failures": failures,
        "failure_rate_pct": 100.0 * failures / count if count else 100.0,
        "tasks_per_s": round(completed_per_s, 2), "duration_s": duration or 0.0,
        "p50_ms": float(r["50%"]), "p95_ms": float(r["95%"]), "p99_ms": float(r["99%"]),
        "avg_ms": round(float(r["Average Response Time"]), 1), "max_ms": float(r["Max Response Time"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prefix", help="the --csv prefix given to locust")
    p.add_argument("--max-failure-rate", type=float, default=1.0, help="percent of tasks allowed to fail (1.0)")
    p.add_argument("--row", default=None, help='the TASK row to judge (default: the first, e.g. "task compute")')
    args = p.parse_args(argv)
    s = summarise(args.prefix, args.row)
    print(f"== {s['row']}: {s['tasks']} tasks in {s['duration_s']:.0f}s, {s['failures']} failed "
          f"({s['failure_rate_pct']:.2f}%)")
    print(f"   throughput {s['tasks_per_s']} completed tasks/s")
    print(f"   end-to-end latency p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms "
          f"(avg {s['avg_ms']} ms, max {s['max_ms']:.0f} ms)")
    for r in _rows(Path(f"{args.prefix}_stats.csv")):
        if r["Type"] not in ("TASK", "") and r["Name"] != "Aggregated":
            print(f"   {r['Name']}: {r['Request Count']} requests, {r['Failure Count']} failed, "
                  f"p50 {r['50%']} ms, p99 {r['99%']} ms")
    if s["failure_rate_pct"] > args.max_failure_rate:
        print(f"FAIL: {s['failure_rate_pct']:.2f}% of tasks failed (threshold {args.max_failure_rate}%)",
              file=sys.stderr)
        return 1
    print(f"PASS: failure rate within {args.max_failure_rate}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
