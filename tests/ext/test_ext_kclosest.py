"""KClosestIndex and xor_distance: py-libp2p's ordering, both implementations identical, and the node's
IndexedRoutingTable on each."""

from __future__ import annotations

import hashlib
import os
import random

import multiaddr
import pytest
import trio
from ext_testkit import outcome
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.kad_dht.routing_table import RoutingTable, peer_id_to_key
from libp2p.kad_dht.utils import xor_distance as stock_xor_distance
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.stack.dht import IndexedRoutingTable


def random_ids(n: int, seed: int = 1) -> list[ID]:
    rng = random.Random(seed)
    return [ID(b"\x00\x24" + rng.randbytes(36)) for _ in range(n)]


def stock_closest(peers, key: bytes, count: int):
    """What RoutingTable.find_local_closest_peers computes: sort everything by xor(sha256(peer), sha256(key))."""
    target = hashlib.sha256(key).digest()
    return sorted(peers, key=lambda p: stock_xor_distance(peer_id_to_key(p), target))[:count]


def test_peer_key_matches_kad_dht(kclosest_impl) -> None:
    peer = random_ids(1)[0]
    assert kclosest_impl.peer_key(peer) == peer_id_to_key(peer)
    assert kclosest_impl.peer_key(peer.to_bytes()) == peer_id_to_key(peer)
    assert kclosest_impl.KEY_SIZE == 32


@pytest.mark.parametrize("count", [0, 1, 3, 20, 199, 200, 500])
def test_closest_equals_routing_table_order(kclosest_impl, count: int) -> None:
    peers = random_ids(200)
    index = kclosest_impl.KClosestIndex()
    for p in peers:
        assert index.add(p) is True
    assert len(index) == 200
    for key in (b"some key", os.urandom(32), peers[7].to_bytes()):
        assert index.closest_to_key(key, count) == stock_closest(peers, key, count)


def test_closest_takes_the_hashed_target(kclosest_impl) -> None:
    peers = random_ids(50)
    index = kclosest_impl.KClosestIndex()
    for p in peers:
        index.add(p)
    # a peer's own key is at distance 0 from itself
    assert index.closest(peer_id_to_key(peers[13]), 1) == [peers[13]]


def test_add_remove_contains(kclosest_impl) -> None:
    a, b, c = random_ids(3)
    index = kclosest_impl.KClosestIndex()
    assert index.add(a) and index.add(b) and index.add(c)
    assert index.add(b) is False  # known: key replaced, still one entry
    assert len(index) == 3 and b in index
    assert index.remove(a) is True
    assert index.remove(a) is False
    assert a not in index and len(index) == 2
    assert index.peers() == [c, b]  # the last slot moved into the freed one
    assert index.key_of(b) == peer_id_to_key(b) and index.key_of(a) is None
    assert index.closest(os.urandom(32), 5) in ([b, c], [c, b])


def test_explicit_keys_and_bytes_peers(kclosest_impl) -> None:
    index = kclosest_impl.KClosestIndex()
    zero, one, big = bytes(32), bytes(31) + b"\x01", b"\xff" * 32
    index.add(b"far", big)
    index.add(b"near", one)
    index.add(b"here", zero)
    assert index.closest(zero, 3) == [b"here", b"near", b"far"]
    assert index.closest(big, 2) == [b"far", b"near"]
    assert index.add(b"here", big) is False  # re-keyed onto far's key: a tie, broken by slot (far is slot 0)
    assert index.closest(zero, 3) == [b"near", b"far", b"here"]
    assert len(index) == 3


def test_equal_keys_tie_break_by_slot(kclosest_impl) -> None:
    index = kclosest_impl.KClosestIndex()
    key = b"\x42" * 32
    for name in (b"p0", b"p1", b"p2"):
        index.add(name, key)
    assert index.closest(key, 3) == [b"p0", b"p1", b"p2"]
    index.remove(b"p0")  # p2 moves into slot 0
    assert index.closest(key, 2) == [b"p2", b"p1"]


def test_bad_keys_and_targets(kclosest_impl) -> None:
    index = kclosest_impl.KClosestIndex()
    with pytest.raises(ValueError, match="32 bytes"):
        index.add(b"p", b"short")
    with pytest.raises(TypeError):
        index.add(b"p", "x" * 32)
    with pytest.raises(ValueError, match="32 bytes"):
        index.closest(b"short", 3)
    with pytest.raises(TypeError):
        index.closest(bytearray(32), 3)
    assert index.closest(bytes(32), 3) == []
    index.add(b"p")
    assert index.closest(bytes(32), 0) == [] and index.closest(bytes(32), -1) == []


def test_sync(kclosest_impl) -> None:
    peers = random_ids(10)
    index = kclosest_impl.KClosestIndex()
    for p in peers[:6]:
        index.add(p)
    index.sync(peers[3:10])
    assert set(index.peers()) == set(peers[3:10]) and len(index) == 7
    index.sync([])
    assert len(index) == 0


@pytest.mark.parametrize(
    "a, b",
    [(bytes(32), b"\xff" * 32), (os.urandom(32), os.urandom(32)), (b"\x01\x02", b"\x03"), (b"", b""),
     (os.urandom(100), os.urandom(100))],
)
def test_xor_distance_matches_kad_dht(kclosest_impl, a: bytes, b: bytes) -> None:
    assert kclosest_impl.xor_distance(a, b) == stock_xor_distance(a, b)


def test_xor_distance_type_errors(kclosest_impl) -> None:
    with pytest.raises(TypeError):
        kclosest_impl.xor_distance("ab", b"ab")
    with pytest.raises(TypeError):
        kclosest_impl.xor_distance(b"ab", bytearray(b"ab"))


keys = st.binary(min_size=32, max_size=32)
small_keys = st.sampled_from([bytes(32), b"\x80" + bytes(31), b"\x01" * 32, b"\xff" * 32])  # forces ties


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 30), st.one_of(keys, small_keys)),
            st.tuples(st.just("remove"), st.integers(0, 30), st.none()),
            st.tuples(st.just("closest"), st.integers(-1, 40), st.one_of(keys, small_keys)),
        ),
        max_size=120,
    )
)
def test_both_agree_and_are_k_smallest(kclosest_pair, ops) -> None:
    indexes = [m.KClosestIndex() for m in kclosest_pair]
    model: dict[int, bytes] = {}
    for op, arg, key in ops:
        if op == "add":
            assert [ix.add(arg, key) for ix in indexes] == [arg not in model] * 2
            model[arg] = key
        elif op == "remove":
            assert [ix.remove(arg) for ix in indexes] == [arg in model] * 2
            model.pop(arg, None)
        else:
            got = [ix.closest(key, arg) for ix in indexes]
            assert got[0] == got[1]
            t = int.from_bytes(key, "big")
            distances = sorted(int.from_bytes(k, "big") ^ t for k in model.values())
            want = distances[: max(arg, 0)]
            assert [int.from_bytes(model[p], "big") ^ t for p in got[0]] == want
        assert indexes[0].peers() == indexes[1].peers()


@given(st.one_of(st.binary(max_size=70), st.text(max_size=3), st.none()), st.binary(max_size=70))
def test_xor_distance_both_agree(kclosest_pair, a, b) -> None:
    got = [outcome(m.xor_distance, a, b) for m in kclosest_pair]
    assert got[0] == got[1]


def test_indexed_routing_table_stays_in_sync(kclosest_impl) -> None:
    """400 peers through real bucket splits, removals, and an eviction inside ``KBucket.add_peer`` (simulated: the
    stale peer leaves ``bucket.peers`` without ``RoutingTable.remove_peer``); the index must answer like the stock
    method."""
    local, *peers = random_ids(402, seed=7)
    late = peers.pop()
    table_type = type("TwinIndexedRoutingTable", (IndexedRoutingTable,), {"index_type": kclosest_impl.KClosestIndex})
    table = table_type(local, host=None)
    addr = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001")]

    async def fill() -> None:
        for p in peers:
            assert await table.add_peer(PeerInfo(p, addr), skip_server_mode_check=True)
        bucket = table.find_bucket(late)
        del bucket.peers[bucket.get_oldest_peer()]  # what KBucket.add_peer does to an unresponsive peer
        assert await table.add_peer(PeerInfo(late, addr), skip_server_mode_check=True)

    trio.run(fill)
    assert len(table.buckets) > 10
    for p in peers[::5]:
        table.remove_peer(p)
    assert set(table.index.peers()) == set(table.get_peer_ids()) and len(table.index) == len(table.get_peer_ids())
    for key in (b"k1", b"k2", os.urandom(16)):
        assert table.find_local_closest_peers(key, 20) == RoutingTable.find_local_closest_peers(table, key, 20)
