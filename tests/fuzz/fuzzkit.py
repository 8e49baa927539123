"""Figures of the fuzz tests: one ``FIGURES {...}`` line per test on stdout, and a JSON line appended to the file
named by ``P2P_FAST_FIGURES`` when it is set (the same format as ``tests/reliability/reliability_kit.record``)."""

from __future__ import annotations

import json
import os
from typing import Any


def record(test: str, **figures: Any) -> None:
    line = json.dumps({"test": test, **figures}, sort_keys=True)
    print("FIGURES", line)
    path = os.environ.get("P2P_FAST_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
