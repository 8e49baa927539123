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
