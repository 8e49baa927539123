"""A host advertises complete ``/p2p-circuit`` addresses (a per-instance patch: :func:`append_addrs` takes the host
and returns its undo).

Upstream: ``libp2p/host/basic_host.py``, ``BasicHost.get_addrs`` (py-libp2p 0.8.1) strips ``/p2p/<id>`` from every
address before appending ours -- also from what the documented ``addrs_factory`` returns -- and for
``.../p2p/RELAY/p2p-circuit`` that cuts at the relay ID, leaving the relay's own address under our peer ID. So a
relayed address cannot be advertised through the public hook. No upstream issue was found.

:func:`append_addrs` wraps ``get_addrs`` on one host and appends complete addresses after py-libp2p's list (what
Identify, the signed peer record and pubsub's sender record then carry). The undo removes the wrapper, so the
class's ``get_addrs`` serves again.
Shown by ``tests/stack/patches/test_host_circuit_addrs.py``.
"""

from __future__ import annotations

from typing import Any, Callable

import multiaddr


def append_addrs(host: Any, extra: Callable[[], list[multiaddr.Multiaddr]]) -> Callable[[], None]:
    """From now on ``host.get_addrs()`` is py-libp2p's list followed by ``extra()``. Returns the undo."""
    stock = host.get_addrs

    def get_addrs() -> list[multiaddr.Multiaddr]:
        return [*stock(), *extra()]

    host.get_addrs = get_addrs

    def undo() -> None:
        if host.__dict__.get("get_addrs") is get_addrs:
            del host.get_addrs

    return undo
