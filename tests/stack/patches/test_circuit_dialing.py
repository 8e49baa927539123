"""p2p_fast.stack.patches.circuit_dialing: ``/p2p-circuit`` addresses are dialable through the swarm and our own
peer ID is never dialed (stock first, then patched; the undo restores the swarm's own ``dial_peer``)."""

from __future__ import annotations

import pytest
import trio
from libp2p.network.exceptions import SwarmException
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.stack.patches.circuit_dialing import install_circuit_dialing
from relay_hosts import DEAD, b_transport as _b_transport, hosts, relay_setup, run


def test_bug_swarm_drops_circuit_addresses_and_work_around():
    async def main() -> tuple[str, list[str]]:
        async with relay_setup() as (r, a, b, circuit):
            with pytest.raises(SwarmException) as stock:
                await b.connect(PeerInfo(a.get_id(), [circuit]))
            undo = install_circuit_dialing(b, _b_transport(b), dial_timeout=10)
            try:
                with trio.fail_after(15):
                    await b.connect(PeerInfo(a.get_id(), [DEAD, circuit]))  # dead direct address first
                addrs = [str(x) for c in b.get_network().get_connections(a.get_id())
                         for x in c.get_transport_addresses()]
            finally:
                undo()
            return str(stock.value), addrs

    stock_error, addrs = run(main)
    assert "relay-only" in stock_error  # bug 1: Swarm.dial_peer never dials /p2p-circuit
    assert any("/p2p-circuit/p2p/" in x for x in addrs), addrs  # ours: connected through the relay



def test_bug_host_connects_to_itself_and_work_around():
    async def main() -> tuple[int, str]:
        async with hosts(1) as (h,):
            with trio.fail_after(5):
                await h.connect(PeerInfo(h.get_id(), h.get_addrs()))
            stock = len(h.get_network().get_connections(h.get_id()))
            for c in list(h.get_network().get_connections(h.get_id())):
                await c.close()
            undo = install_circuit_dialing(h, _b_transport(h), dial_timeout=5)
            try:
                with pytest.raises(SwarmException) as ours:
                    await h.connect(PeerInfo(h.get_id(), h.get_addrs()))
            finally:
                undo()
            return stock, str(ours.value)

    stock, ours = run(main)
    assert stock == 2  # bug 4: a connection to ourselves, filed (both ends) under our own peer ID
    assert "own peer ID" in ours


def test_the_undo_gives_the_swarm_its_own_dial_peer_back():
    async def main() -> None:
        async with hosts(1) as (h,):
            swarm = h.get_network()
            stock = swarm.dial_peer
            undo = install_circuit_dialing(h, _b_transport(h), dial_timeout=5)
            assert "dial_peer" in vars(swarm)
            undo()
            assert "dial_peer" not in vars(swarm) and swarm.dial_peer == stock
            assert all(type(t).__name__ != "CircuitTransport" for t in swarm.transport_manager._transports)

    run(main)
