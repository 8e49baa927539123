"""``p2p_fast.client``: use a p2p-fast network from Python without running a node — futures, map, executors.

::

    from p2p_fast.client import Client

    def square(x):
        return x * x

    with Client("http://127.0.0.1:8080") as client:          # or Client(data_dir="data/worker"); token= or $P2P_API_TOKEN
        print(client.submit(square, 7).result())               # 49, computed on a worker that accepts functions
        print(list(client.map(square, range(10))))             # in order
        print(client.submit("compute", "test_payload").result())  # a registered task type: payload in, bytes out

The node behind ``api`` submits in its own name: functions and packages need its API token. See README
("Python client") for the trust model and :mod:`p2p_fast.protocols.tasks.functions` for the wire format.
"""

from __future__ import annotations

from p2p_fast.client._core import PayloadTooLarge, TaskFailed
from p2p_fast.client._http import NodeError
from p2p_fast.client.aio import AsyncClient
from p2p_fast.client.sync import Client, as_completed, gather

__all__ = ["AsyncClient", "Client", "NodeError", "PayloadTooLarge", "TaskFailed", "as_completed", "gather"]
