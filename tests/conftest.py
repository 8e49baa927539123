import sys
from pathlib import Path
from typing import Iterator

import pytest

pytest_plugins = ["testing.testbed.pytest_plugin"]

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Cluster  # noqa: E402


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def libp2p_patched() -> None:
    """py-libp2p with every process-wide patch applied, as ``build_host`` leaves it (for tests that build hosts with
    py-libp2p's ``new_host``). Idempotent; tests that show stock behaviour revert one patch and re-apply it."""
    from p2p_fast.stack import patches

    patches.apply_all()
