"""Pure-Python twin of ``_kclosest_c``: the k peers closest to a 256-bit key by XOR distance.

``KClosestIndex`` keeps each peer's 32-byte Kademlia key (``sha256(peer_id_bytes)``), computed once when the peer
is added, so a lookup neither re-hashes peers nor sorts them all: ``closest(target, k)`` is a bounded selection,
O(n log k). Results are ordered by distance, ties (only possible for equal keys) by slot order, exactly as
``heapq.nsmallest`` orders them; removal moves the last slot into the freed one, in both implementations.

Kept in sync with a py-libp2p ``RoutingTable`` by ``p2p_fast.stack.dht.IndexedRoutingTable`` (add, remove, evictions
inside a full bucket, cleanup).

Peers are any hashable objects: ``bytes`` (the peer id bytes) or objects with ``to_bytes()`` (``libp2p.peer.id.ID``).
Anything that mutates ``KBucket.peers`` directly must be followed by ``index.sync(table.get_peer_ids())``.
"""

from __future__ import annotations

import hashlib
import heapq
import operator
from collections.abc import Hashable, Iterable

__all__ = ["KEY_SIZE", "KClosestIndex", "peer_key", "xor_distance"]

KEY_SIZE = 32


def peer_key(peer: object) -> bytes:
    """The Kademlia key of a peer: ``sha256`` of its id bytes (``peer`` itself if bytes, else ``peer.to_bytes()``)."""
    raw = peer if isinstance(peer, bytes) else peer.to_bytes()  # type: ignore[attr-defined]
    return hashlib.sha256(raw).digest()


def xor_distance(a: bytes, b: bytes) -> int:
    """XOR distance of two keys as an int (``libp2p.kad_dht.utils.xor_distance``); TypeError unless both are bytes."""
    if not isinstance(a, bytes) or not isinstance(b, bytes):
        raise TypeError("Both key1 and key2 must be bytes objects")
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def _key32(key: object, what: str) -> int:
    if not isinstance(key, bytes):
        raise TypeError(f"{what} must be bytes, not {type(key).__name__}")
    if len(key) != KEY_SIZE:
        raise ValueError(f"{what} must be {KEY_SIZE} bytes, got {len(key)}")
    return int.from_bytes(key, "big")


class KClosestIndex:
    """Peers with their precomputed 256-bit keys; ``closest(target, k)`` returns the k nearest by XOR distance."""

    def __init__(self) -> None:
        self._peers: list[Hashable] = []
        self._keys: list[int] = []
        self._slot: dict[Hashable, int] = {}

    def add(self, peer: Hashable, key: bytes | None = None) -> bool:
        """Index ``peer`` under ``key`` (default ``peer_key(peer)``); True if it was new, else its key is replaced."""
        k = _key32(peer_key(peer) if key is None else key, "key")
        slot = self._slot.get(peer)
        if slot is not None:
            self._keys[slot] = k
            return False
        self._slot[peer] = len(self._peers)
        self._peers.append(peer)
        self._keys.append(k)
        return True

    def remove(self, peer: Hashable) -> bool:
        """Forget ``peer``; True if it was indexed. The last slot moves into the freed one."""
        slot = self._slot.pop(peer, None)
        if slot is None:
            return False
        last_peer = self._peers.pop()
        last_key = self._keys.pop()
        if slot != len(self._peers):
            self._peers[slot] = last_peer
            self._keys[slot] = last_key
            self._slot[last_peer] = slot
        return True

    def sync(self, peers: Iterable[Hashable]) -> None:
        """Make the index hold exactly ``peers`` (e.g. ``RoutingTable.get_peer_ids()``): drop others, add new ones."""
        peers = list(peers)
        wanted = set(peers)
        for peer in [p for p in self._peers if p not in wanted]:
            self.remove(peer)
        for peer in peers:
            if peer not in self._slot:
                self.add(peer)

    def closest(self, target: bytes, k: int = 20) -> list[Hashable]:
        """The ``k`` peers nearest to the 32-byte ``target`` key, nearest first."""
        t = _key32(target, "target")
        k = operator.index(k)
        if k <= 0 or not self._peers:
            return []
        keys = self._keys
        peers = self._peers
        return [peers[i] for i in heapq.nsmallest(k, range(len(keys)), key=lambda i: keys[i] ^ t)]

    def closest_to_key(self, key: bytes, k: int = 20) -> list[Hashable]:
        """``RoutingTable.find_local_closest_peers``: the ``k`` peers nearest to ``sha256(key)``."""
        return self.closest(hashlib.sha256(key).digest(), k)

    def key_of(self, peer: Hashable) -> bytes | None:
        """The key ``peer`` is indexed under, or None."""
        slot = self._slot.get(peer)
        return None if slot is None else self._keys[slot].to_bytes(KEY_SIZE, "big")

    def peers(self) -> list[Hashable]:
        """The indexed peers, in slot order."""
        return list(self._peers)

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer: object) -> bool:
        return peer in self._slot
