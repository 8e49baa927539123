"""Work-arounds for py-libp2p 0.8.1 bugs, each applied once at import and each shown by a test in
``tests/node/test_libp2p_fixes.py``.

1. ``Swarm.dial_peer`` waits out its 250 ms "happy eyeballs" fallback timer after *every* address it starts, even
   when that dial already succeeded: the wait ends only on failure, or when ``max_connections_per_peer`` dials have
   succeeded. So every new connection costs at least 250 ms (REFERENCE.md pitfall 3; go-libp2p returns on the first
   success). The timer is a module constant, so we set it to zero: addresses are then dialed concurrently and the
   first success is not held back. Our own dials pass one address at a time, so nothing extra is dialed.
2. ``MuxerMultistream.new_conn`` ignores the class registered for ``/yamux/1.0.0`` in ``new_host(muxer_opt=...)``:
   once Yamux is negotiated it always builds the stock ``Yamux`` (every other protocol gets the registered class).
   So a Yamux subclass (ours, :mod:`p2p_fast.muxer`) is silently never used. We replace ``new_conn`` with one that
   builds whichever class is registered for the negotiated protocol; for a host with the stock registration it
   builds the stock ``Yamux`` exactly as before.
"""

from __future__ import annotations

from typing import Any

import libp2p.network.swarm as _swarm
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream

STOCK_HAPPY_EYEBALLS_DELAY = _swarm._HAPPY_EYEBALLS_DELAY
STOCK_MUXER_NEW_CONN = MuxerMultistream.new_conn


async def _new_conn_with_registered_class(self: MuxerMultistream, conn: Any, peer_id: Any) -> Any:
    """Negotiate the muxer and build the class registered for it (fix 2)."""
    protocol, transport_class = await self._selector.select(conn, conn.is_initiator, self.negotiate_timeout)
    return self._annotate_connection(transport_class(conn, peer_id), conn, protocol)


def apply_dial_fix() -> None:
    _swarm._HAPPY_EYEBALLS_DELAY = 0.0


def undo_dial_fix() -> None:
    _swarm._HAPPY_EYEBALLS_DELAY = STOCK_HAPPY_EYEBALLS_DELAY


def apply_muxer_fix() -> None:
    MuxerMultistream.new_conn = _new_conn_with_registered_class  # type: ignore[method-assign]


def undo_muxer_fix() -> None:
    MuxerMultistream.new_conn = STOCK_MUXER_NEW_CONN  # type: ignore[method-assign]


def apply() -> None:
    apply_dial_fix()
    apply_muxer_fix()


def undo() -> None:
    """For the tests that demonstrate the bugs."""
    undo_dial_fix()
    undo_muxer_fix()


apply()
