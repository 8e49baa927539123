"""Small pieces of the NAT traversal logic, without processes: AutoNAT's candidate addresses, the connector's use
of circuit addresses, the DCUtR initiator rule."""

from __future__ import annotations

from types import SimpleNamespace

import multiaddr
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.host.observed_addr_manager import ObservedAddrManager
from libp2p.peer.id import ID

from p2p_fast.protocols.discovery.connector import Connector
from p2p_fast.protocols.nat import dcutr as nat_dcutr
from p2p_fast.protocols.nat.autonat import AutoNAT

M = multiaddr.Multiaddr


def _pid() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


def _host_that_observed(observed: list[str]):
    """A real py-libp2p host whose observed-address manager reports ``observed`` (what Identify would have
    recorded from peers behind other NATs; py-libp2p ignores loopback observations, so none can be made here)."""
    host = new_host(key_pair=create_new_key_pair())
    manager = ObservedAddrManager()
    manager.addrs = lambda min_observers=1: [M(a) for a in observed]  # type: ignore[method-assign]
    host._observed_addr_manager = manager
    return host


def test_autonat_candidates_add_the_nat_prediction_but_not_for_our_own_ips():
    host = _host_that_observed(["/ip4/203.0.113.9/tcp/51234", "/ip4/10.0.0.5/tcp/40000"])
    autonat = AutoNAT(host, serve=False, dial_timeout=1)
    got = [str(a) for a in autonat.candidate_addrs([M("/ip4/10.0.0.5/tcp/4001")], predict=True,
                                                   local_ips={"10.0.0.5", "127.0.0.1"})]
    # Listen address, then external IP with our listen port (not the observed ephemeral port); an observation of
    # our own IP means no NAT: nothing to predict.
    assert got == ["/ip4/10.0.0.5/tcp/4001", "/ip4/203.0.113.9/tcp/4001"]
    assert [str(a) for a in autonat.candidate_addrs([M("/ip4/127.0.0.1/tcp/1")], predict=False,
                                                    local_ips=set())] == ["/ip4/127.0.0.1/tcp/1"]


def test_connector_keeps_circuit_addresses_last_and_retries_when_addresses_change():
    host = SimpleNamespace(get_id=lambda: _pid())
    c = Connector(host, target_peers=4, dial_timeout=1)  # type: ignore[arg-type]
    peer = _pid()
    relay = _pid()
    direct, circuit = M("/ip4/10.78.1.10/tcp/4001"), M(f"/ip4/10.77.0.11/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}")
    c.offer(peer, [direct])
    c._failed_until[peer] = 1e18  # the direct address failed
    c.offer(peer, [circuit, direct])
    assert c.candidates[peer] == [direct, circuit]
    assert peer not in c._failed_until  # new (relayed) address: try again now
    c._failed_until[peer] = 1e18
    c.offer(peer, [direct, circuit])  # same addresses: the back-off stands
    assert peer in c._failed_until


def test_dcutr_initiator_is_the_lower_peer_id_unless_the_other_side_stalls(monkeypatch):
    lower, me, higher = sorted((_pid(), _pid(), _pid()), key=str)
    hp = nat_dcutr.HolePuncher.__new__(nat_dcutr.HolePuncher)  # only the rule, no host services
    hp.host = SimpleNamespace(get_id=lambda: me)
    hp._deferred_since = {}
    now = [1000.0]
    monkeypatch.setattr(nat_dcutr.time, "monotonic", lambda: now[0])
    assert hp._should_initiate(higher)  # we have the lower ID: we initiate
    assert not hp._should_initiate(lower)  # they do; we wait...
    now[0] += nat_dcutr.DEFER_LIMIT + 1
    assert hp._should_initiate(lower)  # ...but not forever
