"""NAT traversal across emulated NATs (network namespaces, testing.testbed).

Public segment: a bootstrap, a relay and a public worker. Worker A behind NAT 1, worker B behind NAT 2: MASQUERADE,
no way in, unsolicited inbound SYNs dropped (not rejected) so TCP simultaneous open can work. Every node is a real
``p2p_fast`` process in its own namespace.

What must happen: AutoNAT finds A and B private (dial-backs to their NAT-predicted address are dropped) and the
public worker public; A reserves a slot on the relay named in ``network.relay_addrs``, B on the relay it finds in
the peer book; A and B reach each other through the relay (a connection whose address is a ``/p2p-circuit``
address); DCUtR then hole-punches a direct connection between them -- an address without ``/p2p-circuit``, at the
other NAT's WAN address and listen port -- and the relayed connection is closed. The public worker needs no relay to
meet A: A dials it, and it sees A at NAT 1's WAN address.
"""

from __future__ import annotations

import time

import pytest
from harness import node_config, wait_until

pytestmark = pytest.mark.netns
PORT = 4001


def _cfg(role: str, host, **network) -> dict:
    # connection_timeout 5: a dial to a private address from outside its NAT is blackholed until the timeout.
    cfg = node_config(role, network={"enable_relay": True, "connection_timeout": 5, **network})
    cfg["node"]["listen_host"] = host.ip
    cfg["node"]["listen_port"] = PORT
    return cfg


def _start_all(cluster, specs: list) -> list:
    """Start nodes concurrently (each in its host's namespace), then wait for all of them."""
    procs = [cluster.add(name, cfg, prefix=["ip", "netns", "exec", host.ns], via=host.call).start()
             for host, name, cfg in specs]
    return [p.wait_started() for p in procs]


def _conn(node, peer_id: str) -> dict | None:
    return next((p for p in node.peers() if p["peer_id"] == peer_id), None)


def test_private_workers_meet_through_the_relay_then_hole_punch(testbed, cluster):
    t0 = time.monotonic()
    boot_h, relay_h, pub_h = testbed.add_host("boot"), testbed.add_host("relay"), testbed.add_host("pub")
    nat1, nat2 = testbed.add_nat("nat1"), testbed.add_nat("nat2")
    a_h, b_h = nat1.add_host("wa"), nat2.add_host("wb")

    entry = [f"/ip4/{boot_h.ip}/tcp/{PORT}"]  # the bootstrap's ID is learned on connect
    boot, relay = _start_all(cluster, [(boot_h, "boot", _cfg("bootstrap", boot_h)),
                                       (relay_h, "relay", _cfg("relay", relay_h, bootstrap_peers=entry))])
    relay_addr = f"/ip4/{relay_h.ip}/tcp/{PORT}/p2p/{relay.peer_id}"
    pub, a, b = _start_all(cluster, [
        (pub_h, "pub", _cfg("worker", pub_h, bootstrap_peers=entry)),
        (a_h, "a", _cfg("worker", a_h, bootstrap_peers=entry, relay_addrs=[relay_addr])),
        (b_h, "b", _cfg("worker", b_h, bootstrap_peers=entry)),  # finds the relay in the peer book
    ])
    print(f"5 nodes up after {time.monotonic() - t0:.1f}s")

    # Reachability: A and B private with a reservation on the relay; the public worker public, no reservation.
    for w, host in ((a, a_h), (b, b_h)):
        st = wait_until(lambda w=w: (s := w.status())["nat"]["relayed_addrs"] and s, 40,
                        f"{w.name} to find itself private and advertise a relayed address")
        assert st["nat"]["reachability"] == "private", st["nat"]
        assert st["nat"]["relayed_addrs"] == [f"{relay_addr}/p2p-circuit/p2p/{w.peer_id}"], st["nat"]
        assert st["dht"]["mode"] == "client"
    wait_until(lambda: pub.status()["nat"]["reachability"] == "public", 20, "the public worker to be public")
    assert pub.status()["nat"]["reservations"] == []
    print(f"A, B private with reservations after {time.monotonic() - t0:.1f}s")

    # A and B reach each other through the relay first.
    relayed = wait_until(lambda: (p := _conn(b, a.peer_id)) and p["relayed"] and p, 30,
                         "B and A to connect through the relay")
    assert f"/p2p/{relay.peer_id}/p2p-circuit/p2p/" in relayed["addr"], relayed
    print(f"relayed A-B after {time.monotonic() - t0:.1f}s: {relayed['addr']}")

    # DCUtR: a direct connection to the other NAT's WAN address, then the relayed one is closed.
    def direct(node, peer, nat):
        p = _conn(node, peer.peer_id)
        return p and not p["relayed"] and p["addr"].startswith(f"/ip4/{nat.wan_ip}/tcp/") and p

    got = wait_until(lambda: direct(a, b, nat2) and direct(b, a, nat1), 45,
                     "DCUtR to replace the relayed A-B connection with a direct one")
    dcutr = [w.status()["nat"]["dcutr"] for w in (a, b)]
    assert sum(d["successes"] for d in dcutr) >= 1, dcutr
    print(f"direct A-B after {time.monotonic() - t0:.1f}s: {got['addr']}; dcutr: a={dcutr[0]} b={dcutr[1]}")

    # The public worker and A: A dials it directly (connection reversal), so pub sees A at NAT 1's WAN address.
    pa = wait_until(lambda: (p := _conn(pub, a.peer_id)) and not p["relayed"] and p, 15, "pub and A to be connected")
    assert pa["addr"].startswith(f"/ip4/{nat1.wan_ip}/tcp/"), pa

    # Gossip over the direct connection.
    mark = len(b.lines)
    a.command("gossip punched")
    b.wait_output(rf"\[gossip\] {a.peer_id}: punched", timeout=15, start=mark)
