"""A successful dial is not held back by the 250 ms "happy eyeballs" fallback timer.

Upstream: ``libp2p/network/swarm.py``, ``Swarm.dial_peer`` (py-libp2p 0.8.1). After starting the dial of each
address it waits ``_HAPPY_EYEBALLS_DELAY`` (0.25 s) for that dial to *fail* before it moves on, and the wait ends
early only on failure or once ``max_connections_per_peer`` dials have succeeded. So every new connection costs at
least 250 ms even when its only address answered in 2 ms (go-libp2p returns on the first success). No upstream
issue was found (searched py-libp2p issues for "happy eyeballs" / "dial_peer").

The patch sets the module constant to 0: addresses are dialed concurrently and the first success is not held
back. Our own dials pass one address at a time, so nothing extra is dialed.
Shown by ``tests/stack/patches/test_dial_first_success.py``.
"""

from __future__ import annotations

import libp2p.network.swarm as _swarm

from p2p_fast.stack.patches._attrs import AttributePatch, Replacement

PATCH = AttributePatch(Replacement(_swarm, "_HAPPY_EYEBALLS_DELAY", 0.0))
STOCK_HAPPY_EYEBALLS_DELAY: float = PATCH.stock(_swarm, "_HAPPY_EYEBALLS_DELAY")

apply = PATCH.apply
revert = PATCH.revert
