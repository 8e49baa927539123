"""Discovery across real (emulated) hosts: Kubernetes-style DNS names for the bootstrap, and mDNS on a LAN.

Each node runs in its own network namespace of the test bed (testing.testbed), on a bridge, like pods.
"""

from __future__ import annotations

import pytest

from harness import node_config, wait_until

pytestmark = pytest.mark.netns
FQDN = "p2p-bootstrap.net-test.svc.cluster.local"


def _ns_config(role: str, host, **sections):
    cfg = node_config(role, **sections)
    cfg["node"]["listen_host"] = "0.0.0.0"
    cfg["node"]["listen_port"] = 4001
    return cfg


def _peer_ids(node) -> set[str]:
    return {p["peer_id"] for p in node.peers()}


def test_bootstrap_by_dns_name_headless_records_and_short_names(testbed, testbed_dns_ok, cluster):
    b1, b2 = testbed.add_host("boot1"), testbed.add_host("boot2")
    wa, wb = testbed.add_host("wa"), testbed.add_host("wb")
    testbed.add_dns({"p2p-bootstrap": [b1.ip]})
    boot1 = cluster.start_in(b1, "boot1", _ns_config("bootstrap", b1))

    # The FQDN, without /p2p/<id>: resolved by DNS, ID learned on connect.
    w1 = cluster.start_in(wa, "w1", _ns_config("worker", wa, network={"bootstrap_peers": [f"/dns4/{FQDN}/tcp/4001"]}))
    wait_until(lambda: boot1.peer_id in _peer_ids(w1), 30, "w1 to reach the bootstrap by its DNS name")
    assert w1.get("/readyz") == "ready\n"

    # A headless name (one A record per pod): every address is dialed. A short name works via search domains.
    boot2 = cluster.start_in(b2, "boot2", _ns_config("bootstrap", b2))
    testbed.dns.set_records("p2p-bootstrap", [b1.ip, b2.ip])
    w2 = cluster.start_in(wb, "w2", _ns_config("worker", wb,
                                                 network={"bootstrap_peers": ["/dns4/p2p-bootstrap/tcp/4001"]}))
    wait_until(lambda: {boot1.peer_id, boot2.peer_id} <= _peer_ids(w2), 30, "w2 to dial both A records")
    wait_until(lambda: w1.peer_id in {p["peer_id"] for p in w2.peers()} or w2.status()["live_peers"] >= 3, 30,
               "w2 to learn about w1 through the network")


def test_mdns_two_workers_without_bootstrap_find_each_other(testbed, cluster):
    ha, hb = testbed.add_host("ma"), testbed.add_host("mb")
    cfg = {"network": {"enable_mdns": True, "bootstrap_peers": []}}
    a = cluster.start_in(ha, "a", _ns_config("worker", ha, **cfg))
    b = cluster.start_in(hb, "b", _ns_config("worker", hb, **cfg))
    wait_until(lambda: b.peer_id in _peer_ids(a) and a.peer_id in _peer_ids(b), 40, "mDNS to connect a and b")
    mark = len(b.lines)
    a.command("gossip found-you-by-mdns")
    b.wait_output(rf"\[gossip\] {a.peer_id}: found-you-by-mdns$", start=mark)
