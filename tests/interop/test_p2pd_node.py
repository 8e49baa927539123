"""Interop with our node: a go-libp2p peer (p2pd) joins our network and exchanges gossip on our topic both ways.

The node runs as a real process (``p2p-node``); the go daemon connects to it, subscribes to ``p2p-network/gossip``
and publishes a ``GossipText`` encoded with our codec, which the node prints; the node's console ``gossip`` command
publishes, and the go side decodes what it received with the same codec.
"""

from __future__ import annotations

import time

import pytest

from harness import node_config, wait_until
from testing.interop import P2PDaemon
from p2p_fast.protocols.codec import decode, encode
from p2p_fast.protocols.messages import GossipText

TOPIC = "p2p-network/gossip"


@pytest.mark.parametrize("security", ["noise", "tls"])
def test_go_peer_joins_our_network_and_gossips_both_ways(cluster, p2pd_binary, security):
    boot = cluster.start("boot", node_config("bootstrap", network={"security": [security]}))
    worker = cluster.start("w", node_config("worker", network={"bootstrap_peers": [boot.addr()],
                                                                "security": [security]}))
    with P2PDaemon(p2pd_binary, security=(security,)) as go:
        go.connect(boot.addr())
        sub = go.subscribe(TOPIC)
        go.wait_for_peer(boot.peer_id, timeout=15)
        wait_until(lambda: go.peer_id in {p["peer_id"] for p in boot.peers()}, 15, "bootstrap to list the go peer")

        # go -> our network: the worker (not directly connected to go) prints it, relayed by the bootstrap's mesh.
        text = f"from-go-{security}"
        mark = len(worker.lines)
        deadline = time.monotonic() + 20
        msg = GossipText(sender=go.peer_id, text=text, sent_at=time.time())
        while time.monotonic() < deadline:
            go.publish(TOPIC, encode(msg))
            if any(f"[gossip] {go.peer_id}: {text}" in ln for ln in worker.lines[mark:]):
                break
            time.sleep(0.3)
        worker.wait_output(rf"\[gossip\] {go.peer_id}: {text}$", timeout=1, start=mark)

        # our network -> go: the worker publishes, go receives and decodes it with our codec.
        want = f"from-worker-{security}"

        def got_it() -> bool:
            worker.command(f"gossip {want}")
            try:
                m = sub.wait_for(lambda m: m.from_peer == worker.peer_id, timeout=0.5)
            except TimeoutError:
                return False
            decoded = decode(m.data)
            return isinstance(decoded, GossipText) and decoded.text == want

        wait_until(got_it, 25, "the go peer to receive the worker's gossip")
