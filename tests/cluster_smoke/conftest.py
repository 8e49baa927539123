"""Smoke tests against a deployed cluster (./deploy.sh), run by ``./test.sh --cluster``: see kube_smoke."""

from __future__ import annotations

import pytest
from kube_smoke import require_deployment


@pytest.fixture(autouse=True)
def deployed() -> None:
    require_deployment()
