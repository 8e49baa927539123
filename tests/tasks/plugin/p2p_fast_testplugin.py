"""A user task-type plugin for the tests, registered through the ``p2p_fast.tasks`` entry-point group (see the
``.dist-info`` beside it: putting this directory on PYTHONPATH "installs" it)."""

from __future__ import annotations

import os
import time

from p2p_fast.tasks import task_type


@task_type(capability="compute")
def slowpoke(payload: bytes) -> bytes:
    """Echo, but first sleep ``payload`` seconds on workers started with P2P_TEST_SLOW=1."""
    if os.environ.get("P2P_TEST_SLOW") == "1":
        time.sleep(float(payload.decode()))
    return payload


def wordcount(payload: bytes) -> str:
    """Needs the capability ``wordcount`` (the entry-point name: no decorator)."""
    return str(len(payload.split()))
