"""p2p_fast.stack.patches.auto_connector_off: py-libp2p's auto-dialer dials a peer it only knows from its
peerstore (stock); switched off, it dials nothing; the undo gives it back."""

from __future__ import annotations

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair

from p2p_fast.stack.patches.auto_connector_off import disable_auto_dials

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


async def _auto_dials(off: bool) -> bool:
    """A learns B's address (as from Identify or the DHT) and its auto-connector runs once: did A connect to B?"""
    a, b = new_host(key_pair=create_new_key_pair()), new_host(key_pair=create_new_key_pair())
    async with a.run(LISTEN), b.run(LISTEN):
        undo = disable_auto_dials(a) if off else None
        a.get_peerstore().add_addrs(b.get_id(), b.get_addrs(), 600)
        auto = a.get_network().auto_connector
        with trio.fail_after(20):
            await auto.maybe_connect()
            connected = False
            with trio.move_on_after(2):
                while not connected:
                    connected = b.get_id() in a.get_connected_peers()
                    await trio.sleep(0.02)
        if undo is not None:
            undo()
            assert "maybe_connect" not in vars(auto)
        if connected:
            await a.disconnect(b.get_id())
        return connected


def test_the_auto_connector_dials_peerstore_peers_in_stock_and_not_when_off():
    assert trio.run(_auto_dials, False) is True  # stock: a dial nobody asked for
    assert trio.run(_auto_dials, True) is False
