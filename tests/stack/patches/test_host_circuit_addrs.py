"""p2p_fast.stack.patches.host_circuit_addrs: a host advertises complete circuit addresses (stock first: py-libp2p
cuts them at the relay ID, also through ``addrs_factory``; then patched, and undone)."""

from __future__ import annotations

import multiaddr
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2p_fast.stack.patches.host_circuit_addrs import append_addrs

RELAY = ID.from_base58("12D3KooWSmtCSLNpYxWwqyc8uGMw1sgwnEAFxz89Q8kN2W3kDAoy")


def test_bug_get_addrs_mangles_circuit_addresses():
    circuit = multiaddr.Multiaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit")
    host = new_host(key_pair=create_new_key_pair(), addrs_factory=lambda addrs: [circuit])
    got = [str(a) for a in host.get_addrs()]
    # The relay's own address, under our peer ID: a circuit address cannot be advertised through addrs_factory.
    assert got == [f"/ip4/10.0.0.1/tcp/4001/p2p/{host.get_id()}"], got  # bug 5


def test_appended_circuit_addresses_are_advertised_whole_and_the_undo_restores_stock():
    host = new_host(key_pair=create_new_key_pair())
    circuit = multiaddr.Multiaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/{host.get_id()}")
    stock = [str(a) for a in host.get_addrs()]
    undo = append_addrs(host, lambda: [circuit])
    assert [str(a) for a in host.get_addrs()] == [*stock, str(circuit)]
    undo()
    assert "get_addrs" not in vars(host)
    assert [str(a) for a in host.get_addrs()] == stock
