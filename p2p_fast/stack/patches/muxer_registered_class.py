"""The Yamux class registered in ``new_host(muxer_opt=...)`` is the one connections are built with.

Upstream: ``libp2p/stream_muxer/muxer_multistream.py``, ``MuxerMultistream.new_conn`` (py-libp2p 0.8.1): once
``/yamux/1.0.0`` is negotiated it always builds the stock ``Yamux``, whatever class was registered for it (every
other protocol gets its registered class). So a Yamux subclass passed through the documented ``muxer_opt`` argument
(ours: :class:`p2p_fast.stack.muxer.FastYamux`) is silently never used. No upstream issue was found.

The patch replaces ``new_conn`` with one that builds whichever class is registered for the negotiated protocol; a
host with the stock registration gets the stock ``Yamux`` exactly as before.
Shown by ``tests/stack/patches/test_muxer_registered_class.py``.
"""

from __future__ import annotations

from typing import Any

from libp2p.stream_muxer.muxer_multistream import MuxerMultistream

from p2p_fast.stack.patches._attrs import AttributePatch, Replacement


async def new_conn_with_registered_class(self: MuxerMultistream, conn: Any, peer_id: Any) -> Any:
    """Negotiate the muxer and build the class registered for it."""
    protocol, transport_class = await self._selector.select(conn, conn.is_initiator, self.negotiate_timeout)
    return self._annotate_connection(transport_class(conn, peer_id), conn, protocol)


PATCH = AttributePatch(Replacement(MuxerMultistream, "new_conn", new_conn_with_registered_class))
STOCK_NEW_CONN = PATCH.stock(MuxerMultistream, "new_conn")

apply = PATCH.apply
revert = PATCH.revert
