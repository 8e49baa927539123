"""Kademlia DHT for the node: py-libp2p's ``KadDHT`` whose routing table answers k-closest queries from our
compiled ``KClosestIndex``.

Stock ``RoutingTable.find_local_closest_peers`` hashes every peer in the table (sha256 of its id) and sorts them all
by XOR distance, on every query it answers and every lookup step it takes. :class:`IndexedRoutingTable` keeps each
peer's key, computed once when the peer joins the table, and selects the k nearest without a full sort
(``p2p_fast._ext.kclosest``). The answers are the same list, in the same order (``tests/perf/test_dht_index.py``).

The index follows the table: it is updated by ``add_peer`` (which may also evict an unresponsive peer from a full
bucket), ``remove_peer`` and ``cleanup_routing_table``; the one path that removes peers behind the table's back
(the periodic stale-peer refresh calls ``KBucket.remove_peer`` directly) is caught by comparing sizes before each
query (the index only ever holds a superset then) and re-syncing.

Why this is not in :mod:`p2p_fast.stack.patches`: :class:`IndexedKadDHT` is a subclass we construct ourselves, and
the only py-libp2p object it changes is the routing table its own constructor just built (``KadDHT`` takes no table
class, so :meth:`IndexedRoutingTable.adopt` re-classes it in place); no other ``KadDHT`` or ``RoutingTable`` is
affected.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.routing_table import RoutingTable
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast._ext import KClosestIndex


class IndexedRoutingTable(RoutingTable):
    """A ``RoutingTable`` with a :class:`KClosestIndex` of its peers for ``find_local_closest_peers``."""

    index: KClosestIndex
    #: the index implementation (the compiled one when loaded); the twin tests swap in the other one
    index_type: type = KClosestIndex

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.index = self.index_type()

    @classmethod
    def adopt(cls, table: RoutingTable) -> "IndexedRoutingTable":
        """Turn an existing stock table (already referenced by KadDHT's helpers) into an indexed one, in place."""
        table.__class__ = cls
        assert isinstance(table, IndexedRoutingTable)
        table.index = cls.index_type()
        table.index.sync(table.get_peer_ids())
        return table

    def _resync_if_drifted(self) -> None:
        if len(self.index) != self.size():
            self.index.sync(self.get_peer_ids())

    async def add_peer(self, peer_obj: PeerInfo | ID, *, skip_server_mode_check: bool = False) -> bool:
        added = await super().add_peer(peer_obj, skip_server_mode_check=skip_server_mode_check)
        if added:
            self.index.add(peer_obj.peer_id if isinstance(peer_obj, PeerInfo) else peer_obj)
        self._resync_if_drifted()  # a full bucket may have evicted its oldest peer
        return added

    def remove_peer(self, peer_id: ID) -> bool:
        removed = super().remove_peer(peer_id)
        self.index.remove(peer_id)
        return removed

    def cleanup_routing_table(self) -> None:
        super().cleanup_routing_table()
        self.index = self.index_type()

    def find_local_closest_peers(self, key: bytes, count: int = 20) -> list[ID]:
        self._resync_if_drifted()
        return self.index.closest_to_key(key, count)  # type: ignore[return-value]


class IndexedKadDHT(KadDHT):
    """``KadDHT`` with an :class:`IndexedRoutingTable` (same constructor); its periodic routing-table refresh is
    optional work a node under CPU pressure skips (``load_shed``, set ``shedder``)."""

    def __init__(self, host: IHost, mode: DHTMode, **kwargs: Any) -> None:
        super().__init__(host, mode, **kwargs)
        IndexedRoutingTable.adopt(self.routing_table)
        self.shedder: Any = None

    async def refresh_routing_table(self) -> None:
        if self.shedder is not None and not self.shedder.allow("dht-refresh"):
            return
        await super().refresh_routing_table()


def build_dht(host: IHost, mode: DHTMode) -> IndexedKadDHT:
    """The node's DHT: random walk off (the node runs its own discovery), indexed k-closest lookups."""
    return IndexedKadDHT(host, mode, enable_random_walk=False)
