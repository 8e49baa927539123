"""The doctor's result type, its printing and its command line."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Sequence

import trio

OK, PROBLEM, SKIPPED = "ok", "problem", "skipped"


@dataclass
class Check:
    name: str
    status: str  # OK, PROBLEM or SKIPPED
    detail: str
    fix: str = ""

    def render(self) -> str:
        mark = {OK: "ok     ", PROBLEM: "PROBLEM", SKIPPED: "skipped"}[self.status]
        lines = [f"[{mark}] {self.name}: {self.detail}"]
        if self.status == PROBLEM and self.fix:
            lines.append(f"          what to do: {self.fix}")
        return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="p2p-node doctor",
                                description="Check a node's config, its way into the network and, when it runs, "
                                            "its gossip mesh and clock. Exit 0 when no check finds a problem.")
    p.add_argument("--config", required=True, help="the node's YAML config (the one it runs with)")
    p.add_argument("--api", metavar="URL", help="HTTP API of the running node (default: the node running on this "
                                                "config's data dir, found through <data_dir>/node.json)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per dial (default: network.connection_timeout, at most 10)")
    p.add_argument("--max-clock-skew", type=float, default=1.0, metavar="SECONDS",
                   help="largest peer clock offset that passes (default 1.0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.timeout is not None and not 0.1 <= args.timeout <= 120:
        print("p2p-node doctor: --timeout must be between 0.1 and 120 seconds", file=sys.stderr)
        return 2
    from p2p_fast.app.doctor.run import run_checks

    problems = 0

    def emit(check: Check) -> None:
        nonlocal problems
        problems += check.status == PROBLEM
        print(check.render(), flush=True)

    trio.run(run_checks, args, emit)
    print(f"doctor: {problems} problem(s)" if problems else "doctor: all checks passed", flush=True)
    return 1 if problems else 0
