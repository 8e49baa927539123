"""Discovery does not redial a peer that just closed on us, and a worker pruned by its bootstrap does not keep
redialing it: the dial/prune loops that kept a 100-node network from settling (bench/RESULTS.md, "N = 100")."""

from __future__ import annotations

import multiaddr
import pytest
import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from host_pair import two_hosts
from p2p_fast.protocols.discovery import bootstrap as bootstrap_mod
from p2p_fast.protocols.discovery.bootstrap import Bootstrapper
from p2p_fast.protocols.discovery.connector import RECONNECT_BACKOFF, Connector, outbound_target


def test_the_outbound_target_is_half_the_low_watermark_but_at_least_the_mesh_degree_and_at_most_the_cap():
    assert outbound_target(degree=6, low=16, max_connections=100) == 8
    assert outbound_target(degree=6, low=4, max_connections=100) == 6
    assert outbound_target(degree=6, low=40, max_connections=10) == 10
    assert outbound_target(degree=6, low=0, max_connections=0) == 0


def test_a_peer_whose_connection_closed_is_not_redialed_until_its_backoff_or_a_new_address():
    trio.run(_closed_peer_not_redialed)


async def _closed_peer_not_redialed() -> None:
    async with two_hosts() as (a, b):
        c = Connector(a, target_peers=4, dial_timeout=5)
        addrs = list(b.get_addrs())
        c.offer(b.get_id(), addrs)
        await a.disconnect(b.get_id())  # e.g. b's connection manager pruned us
        c.note_closed(b.get_id())
        assert c.backoff(b.get_id()) >= 0.5 * RECONNECT_BACKOFF - 1
        await c._dial(b.get_id(), addrs)
        assert b.get_id() not in a.get_connected_peers()
        c.offer(b.get_id(), addrs)  # the same addresses again (a later advertisement): the backoff stands
        await c._dial(b.get_id(), addrs)
        assert b.get_id() not in a.get_connected_peers()
        c.offer(b.get_id(), addrs + [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/1")])  # new addresses: try now
        assert c.backoff(b.get_id()) == 0
        await c._dial(b.get_id(), c.candidates[b.get_id()])
        assert b.get_id() in a.get_connected_peers()


def test_mdns_finds_are_not_dialed_once_the_node_has_its_target():
    trio.run(_mdns_finds_respect_the_target)


async def _mdns_finds_respect_the_target() -> None:
    async with two_hosts() as (a, b):
        c = Connector(a, target_peers=1, dial_timeout=5)  # a already has its one peer (b)
        third = ID.from_pubkey(create_new_key_pair().public_key)
        dialed: list[ID] = []

        async def fake_dial(peer_id, addrs):  # records what the immediate path would dial
            dialed.append(peer_id)

        c._dial = fake_dial  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c._immediate, nursery)
            c.offer_now(PeerInfo(third, [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/1")]))
            await trio.sleep(0.2)
            assert dialed == []
            await a.disconnect(b.get_id())  # now short of its target: the next find is dialed
            c.offer_now(PeerInfo(third, [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/1")]))
            with trio.fail_after(5):
                while not dialed:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert dialed == [third]


class _Host:
    """Connected to one peer that is not the bootstrap (it pruned us); every bootstrap dial is counted."""

    def __init__(self) -> None:
        self.me = ID.from_pubkey(create_new_key_pair().public_key)
        self.other = ID.from_pubkey(create_new_key_pair().public_key)

    def get_id(self) -> ID:
        return self.me

    def get_connected_peers(self) -> list[ID]:
        return [self.other]


@pytest.mark.parametrize("short_of_peers", [True, False])
def test_a_worker_pruned_by_its_bootstrap_refreshes_less_and_less_often_and_not_at_all_with_enough_peers(
        short_of_peers, monkeypatch):
    boot = ID.from_pubkey(create_new_key_pair().public_key)
    b = Bootstrapper(_Host(), [f"/ip4/127.0.0.1/tcp/4001/p2p/{boot}"], interval=5, dial_timeout=1,  # type: ignore[arg-type]
                     room=lambda: short_of_peers)
    rounds: list[float] = []

    async def counted_round() -> int:
        rounds.append(trio.current_time())
        b.rounds += 1
        return 0

    monkeypatch.setattr(b, "run_round", counted_round)

    async def main() -> None:
        with trio.move_on_after(3600):  # an hour of mock time
            await b.run()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    refreshes = rounds[1:]  # the first round is the start
    if not short_of_peers:
        assert refreshes == []
        return
    # every 30 s would be 120 refreshes in an hour; doubling up to REFRESH_MAX leaves a handful
    assert 3 <= len(refreshes) <= 3600 / bootstrap_mod.REFRESH_MAX + 6, rounds
    gaps = [y - x for x, y in zip(rounds, rounds[1:])]
    assert gaps[-1] >= 0.5 * bootstrap_mod.REFRESH_MAX, gaps
