"""The tools that use the test harnesses run from a checkout as documented (``python bench/...``,
``python stress/...``), from any working directory and without PYTHONPATH: they find ``testing/`` (never installed)
by putting the repository root on ``sys.path`` themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _users_of_testing() -> list[str]:
    """Every script under bench/ and stress/ that imports ``testing``."""
    out = []
    for folder in ("bench", "stress"):
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text()
            if "from testing" in text or "import testing" in text:
                out.append(path.relative_to(REPO).as_posix())
    return out


def test_the_harness_users_are_found() -> None:
    users = _users_of_testing()
    assert "stress/bed.py" in users and "bench/macro/gossip_bench.py" in users, users


@pytest.mark.parametrize("script", _users_of_testing())
def test_script_runs_from_anywhere_without_pythonpath(script: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{script} --help failed:\n{proc.stderr[-3000:]}"
    assert "usage" in proc.stdout.lower()


def test_testing_is_importable_only_from_the_checkout(tmp_path: Path) -> None:
    """Outside the checkout (no repository root on sys.path) there is no ``testing`` package to import."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import importlib.util, sys; print(importlib.util.find_spec('testing') is None)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stdout + proc.stderr
