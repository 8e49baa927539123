"""p2p_fast.stack.dht: the indexed routing table answers k-closest queries exactly as py-libp2p's stock table does, while
peers join (bucket splits, full-bucket evictions), leave, and disappear behind its back."""

from __future__ import annotations

import random

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.kad_dht import DHTMode
from libp2p.kad_dht.routing_table import KBucket, RoutingTable
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.stack.dht import IndexedKadDHT, IndexedRoutingTable, build_dht


def random_peer(rng: random.Random) -> PeerInfo:
    pid = ID(bytes([0x00, 0x24]) + rng.randbytes(36))
    return PeerInfo(pid, [multiaddr.Multiaddr(f"/ip4/10.{rng.randrange(256)}.{rng.randrange(256)}.1/tcp/4001")])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_answers_as_the_stock_table(monkeypatch, seed):
    rng = random.Random(seed)
    # A full bucket pings its oldest peer before evicting it: answer from a fixed coin instead of the network.
    coin = random.Random(seed + 100)
    outcomes: list[bool] = []

    async def fake_ping(self, peer_id):
        if not outcomes:
            outcomes.append(coin.random() < 0.5)
        return outcomes.pop()

    monkeypatch.setattr(KBucket, "_ping_peer", fake_ping)

    async def main():
        host = new_host(key_pair=create_new_key_pair())
        local = host.get_id()
        stock, ours = RoutingTable(local, host), IndexedRoutingTable(local, host)
        peers = [random_peer(rng) for _ in range(700)]

        async def both(coro_fn, *args):
            # the same ping outcome for both tables
            value = coin.random() < 0.5
            outcomes[:] = [value]
            a = await coro_fn(stock, *args)
            outcomes[:] = [value]
            b = await coro_fn(ours, *args)
            assert a == b
            return a

        for p in peers:
            await both(lambda t, p: t.add_peer(p, skip_server_mode_check=True), p)
        present = stock.get_peer_ids()
        for pid in rng.sample(present, 60):  # leave through the table
            assert stock.remove_peer(pid) == ours.remove_peer(pid)
        for pid in rng.sample(stock.get_peer_ids(), 15):  # vanish behind its back (stale-peer refresh path)
            stock.find_bucket(pid).remove_peer(pid)
            ours.find_bucket(pid).remove_peer(pid)
        for p in peers[:50]:  # rejoin
            await both(lambda t, p: t.add_peer(p, skip_server_mode_check=True), p)

        assert set(stock.get_peer_ids()) == set(ours.get_peer_ids())
        assert len(stock.buckets) > 1  # the table did split
        for _ in range(300):
            key = rng.randbytes(rng.choice([32, 34, 38]))
            count = rng.choice([1, 3, 20, 1000])
            assert ours.find_local_closest_peers(key, count) == stock.find_local_closest_peers(key, count)
        # keys of peers in the table, the usual query in FIND_NODE
        for pid in rng.sample(stock.get_peer_ids(), 20):
            key = pid.to_bytes()
            assert ours.find_local_closest_peers(key) == stock.find_local_closest_peers(key)

        stock.cleanup_routing_table()
        ours.cleanup_routing_table()
        assert ours.find_local_closest_peers(b"k" * 32) == [] == stock.find_local_closest_peers(b"k" * 32)

    trio.run(main)


def test_build_dht_uses_one_indexed_table_everywhere():
    host = new_host(key_pair=create_new_key_pair())
    dht = build_dht(host, DHTMode.SERVER)
    assert isinstance(dht, IndexedKadDHT)
    assert isinstance(dht.routing_table, IndexedRoutingTable)
    assert dht.peer_routing.routing_table is dht.routing_table

