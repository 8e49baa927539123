"""A user task-type plugin for the tests, registered through the ``p2p_fast.protocols.tasks`` entry-point group (see the
``.dist-info`` beside it: putting this directory on PYTHONPATH "installs" it)."""

from __future__ import annotations

import os
import time

from p2p_fast.protocols.tasks import task_type


@task_type(capability="compute")
def slowpoke(payload: bytes) -> bytes:
    """Echo, but first sleep ``payload`` seconds on workers started with P2P_TEST_SLOW=1."""
    if os.environ.get("P2P_TEST_SLOW") == "1":
        time.sleep(float(payload.decode()))
    return payload


def wordcount(payload: bytes) -> str:
    """Needs the capability ``wordcount`` (the entry-point name: no decorator)."""
    return str(len(payload.split()))


def _corrupt() -> bool:
    """Workers started with P2P_TEST_CORRUPT=1 return wrong results (a dishonest worker, for the incentive tests)."""
    return os.environ.get("P2P_TEST_CORRUPT") == "1"


@task_type(capability="compute")
def square(payload: bytes) -> str:
    """The square of the integer in the payload (no verifier: only redundancy can catch a wrong one)."""
    n = int(payload.decode())
    return str(n * n + 1 if _corrupt() else n * n)


def _check_square(payload: bytes, result: bytes) -> bool | None:
    try:
        return int(result.decode()) == int(payload.decode()) ** 2
    except ValueError:
        return False


@task_type(capability="compute", verify=_check_square)
def checked_square(payload: bytes) -> str:
    """``square`` with a verifier: submitters with this plugin check every result themselves."""
    n = int(payload.decode())
    return str(n * n + 1 if _corrupt() else n * n)
