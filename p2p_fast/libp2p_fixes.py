"""Work-arounds for py-libp2p 0.8.1 bugs, each applied once at import and each shown by a test in
``tests/node/test_libp2p_fixes.py``.

1. ``Swarm.dial_peer`` waits out its 250 ms "happy eyeballs" fallback timer after *every* address it starts, even
   when that dial already succeeded: the wait ends only on failure, or when ``max_connections_per_peer`` dials have
   succeeded. So every new connection costs at least 250 ms (REFERENCE.md pitfall 3; go-libp2p returns on the first
   success). The timer is a module constant, so we set it to zero: addresses are then dialed concurrently and the
   first success is not held back. Our own dials pass one address at a time, so nothing extra is dialed.
"""

from __future__ import annotations

import libp2p.network.swarm as _swarm

STOCK_HAPPY_EYEBALLS_DELAY = _swarm._HAPPY_EYEBALLS_DELAY


def apply() -> None:
    _swarm._HAPPY_EYEBALLS_DELAY = 0.0


def undo() -> None:
    """For the test that demonstrates the bug."""
    _swarm._HAPPY_EYEBALLS_DELAY = STOCK_HAPPY_EYEBALLS_DELAY


apply()
