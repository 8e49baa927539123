"""Build the wheel once per session, the way a user or the image does: from the checkout's tracked files, with the
build tools of this venv (``--no-build-isolation``: offline and quick), into a scratch directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
# Local build products and caches: never part of a source tree handed to the build.
_UNTRACKED = shutil.ignore_patterns(".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", "*.so",
                                    "*.c", ".pytest_cache", ".hypothesis", ".benchmarks", "run")


def _source_copy(dest: Path) -> Path:
    """The files git tracks or would track (what a clone has, plus new files not yet committed), else the tree
    without local build products."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, timeout=60)
    if listed.returncode != 0 or not listed.stdout:
        shutil.copytree(REPO, dest, ignore=_UNTRACKED, dirs_exist_ok=True)
        return dest
    for name in listed.stdout.decode().split("\0"):
        src = REPO / name
        if name and src.is_file():  # a file deleted but not yet committed is listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    src = _source_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out),
         str(src)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        env={**os.environ, "P2P_FAST_REQUIRE_EXTENSIONS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    wheels = sorted(out.glob("p2p_fast-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, got {wheels}"
    yield wheels[0]
