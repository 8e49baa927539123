"""Circuit relay v2 end to end on loopback: a relay and two workers nobody can dial.

Without namespaces, a worker "behind NAT" is emulated: it listens on 127.0.0.1 but announces only 127.0.0.1 port 1,
where nothing listens (checked), so AutoNAT dial-backs fail and its advertised direct address is refused. Both
workers must find themselves private, take a reservation on the relay -- worker ``a`` from ``network.relay_addrs``,
worker ``b`` from the peer book (a peer advertising role ``relay``) -- and advertise a circuit address. Since neither
can dial the other directly, they connect through the relay, and gossip flows over that network. DCUtR runs its
exchange over the circuit, but there is nothing to punch: py-libp2p ignores loopback observations, so neither side
has a predicted address, and the announced one is dead. (Hole punching proper: tests/nat/test_nat_netns.py.)
"""

from __future__ import annotations

import socket
import time

import pytest
from harness import node_config, wait_until

DEAD_PORT = 1  # privileged, so no test node can listen there


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _conns(node, peer_id: str) -> dict | None:
    return next((p for p in node.peers() if p["peer_id"] == peer_id), None)


def test_private_workers_connect_through_the_relay_and_gossip(cluster):
    if not _refused(DEAD_PORT):
        pytest.skip(f"something listens on 127.0.0.1:{DEAD_PORT}; the test needs a refused port")
    t0 = time.monotonic()
    relay = cluster.start("relay", node_config("relay"))
    relay_addr = relay.addr()
    hidden = {"enable_relay": True, "bootstrap_peers": [relay_addr], "announce_addrs": [f"/ip4/127.0.0.1/tcp/{DEAD_PORT}"]}
    a = cluster.start("a", node_config("worker", network={**hidden, "relay_addrs": [relay_addr]}))
    b = cluster.start("b", node_config("worker", network=hidden))  # finds the relay in the peer book

    # Each learns it is private, reserves a slot on the relay, advertises the circuit address, turns DHT client.
    for w in (a, b):
        st = wait_until(lambda w=w: (s := w.status())["nat"]["relayed_addrs"] and s, 30,
                        f"{w.name} to advertise a relayed address")
        nat = st["nat"]
        assert nat["reachability"] == "private", nat
        assert nat["reservations"] == [relay.peer_id], nat
        assert nat["relayed_addrs"] == [f"{relay_addr}/p2p-circuit/p2p/{w.peer_id}"], nat
        assert st["dht"]["mode"] == "client"
    assert relay.status()["nat"]["relay_service"]["reservations"] == 2
    print(f"both private with a reservation after {time.monotonic() - t0:.1f}s")

    # They reach each other through the relay: the connection's address is a circuit through it.
    circuit = f"/p2p/{relay.peer_id}/p2p-circuit/p2p/"
    ab = wait_until(lambda: (p := _conns(a, b.peer_id)) and p["relayed"] and p, 30, "a and b to connect via relay")
    ba = wait_until(lambda: (p := _conns(b, a.peer_id)) and p["relayed"] and p, 10, "b to see the relayed connection")
    assert circuit in ab["addr"] or circuit in ba["addr"], (ab, ba)
    assert relay.status()["nat"]["relay_service"]["circuits"] >= 1
    print(f"relayed connection after {time.monotonic() - t0:.1f}s: {ab['addr']} / {ba['addr']}")

    # Gossip flows both ways.
    for sender, receiver in ((a, b), (b, a)):
        mark = len(receiver.lines)
        sender.command(f"gossip hello-from-{sender.name}")
        receiver.wait_output(rf"\[gossip\] {sender.peer_id}: hello-from-{sender.name}", timeout=15, start=mark)

    # DCUtR runs over the circuit (CONNECT/SYNC through the relay) but cannot go direct here: the only direct
    # address either side has is the dead one. The relayed connection stays in use.
    wait_until(lambda: sum(w.status()["nat"]["dcutr"]["attempts"] for w in (a, b)) >= 1, 20,
               "a DCUtR hole-punch attempt over the relayed connection")
    assert all(w.status()["nat"]["dcutr"]["successes"] == 0 for w in (a, b))
    assert _conns(a, b.peer_id)["relayed"]
    mark = len(b.lines)
    a.command("gossip still-relayed")
    b.wait_output(rf"\[gossip\] {a.peer_id}: still-relayed", timeout=15, start=mark)
    print(f"done after {time.monotonic() - t0:.1f}s")
