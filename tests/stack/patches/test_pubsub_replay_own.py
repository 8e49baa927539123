"""p2p_fast.stack.patches.pubsub_replay_own: when a peer joins, stock py-libp2p writes it every message of the topic's
gossip window, other nodes' too, one RPC each; patched, it gets only the messages we published ourselves."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast.stack.patches.pubsub_replay_own import MAX_REPLAYED, replay_only_own
from pubsub_patch_helpers import TOPIC

pytestmark = pytest.mark.usefixtures("libp2p_patched")
LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


def _pubsub(host) -> Pubsub:
    # a slow heartbeat: the message cache's gossip window (3 heartbeats) still holds everything when the peer joins
    router = GossipSub(protocols=["/meshsub/1.1.0"], degree=6, degree_low=4, degree_high=12,
                       heartbeat_interval=30, heartbeat_initial_delay=0.05, spam_protection_enabled=False)
    return Pubsub(host, router)


async def _wait(cond, what: str, timeout: float = 15) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.02)


@pytest.mark.parametrize("patched", [False, True], ids=["stock", "patched"])
def test_a_joining_peer_is_replayed_only_what_we_published(patched):
    """A hears three messages from C and publishes one itself; then B, subscribed, connects to A only. Stock, A
    replays all four to B (C's too, which B's mesh would bring it anyway); patched, only A's own."""

    async def main() -> None:
        hosts = [new_host(key_pair=create_new_key_pair()) for _ in range(3)]
        pa, pb, pc = (_pubsub(h) for h in hosts)
        a, b, c = hosts
        if patched:
            replay_only_own(pa.router)
        async with a.run(LISTEN), b.run(LISTEN), c.run(LISTEN), \
                background_trio_service(pa), background_trio_service(pa.router), \
                background_trio_service(pb), background_trio_service(pb.router), \
                background_trio_service(pc), background_trio_service(pc.router):
            for p in (pa, pb, pc):
                await p.wait_until_ready()
            sub_a = await pa.subscribe(TOPIC)
            await pc.subscribe(TOPIC)
            await c.connect(info_from_p2p_addr(a.get_addrs()[0]))
            await _wait(lambda: c.get_id() in pa.peer_topics.get(TOPIC, ()) and a.get_id() in pc.peer_topics.get(
                TOPIC, ()), "A and C see each other's subscription")
            for i in range(3):
                await pc.publish(TOPIC, b"from C %d" % i)
            for _ in range(3):
                with trio.fail_after(10):
                    await sub_a.get()
            await pa.publish(TOPIC, b"from A")

            sub_b = await pb.subscribe(TOPIC)
            await b.connect(info_from_p2p_addr(a.get_addrs()[0]))
            got: list[bytes] = []
            with trio.move_on_after(3):  # what a replay sends comes at once; wait a little beyond the last
                while True:
                    got.append((await sub_b.get()).data)
            if patched:
                assert got == [b"from A"]
            else:
                assert sorted(got) == [b"from A", b"from C 0", b"from C 1", b"from C 2"]

    trio.run(main)


def test_no_more_than_the_newest_few_of_our_own_are_replayed():
    """A burst of our own messages: only the newest MAX_REPLAYED go to a joining peer (Pubsub delivers the messages
    of one RPC concurrently, so their order at the receiver is not the sending order)."""

    async def main() -> None:
        a, b = new_host(key_pair=create_new_key_pair()), new_host(key_pair=create_new_key_pair())
        pa, pb = _pubsub(a), _pubsub(b)
        replay_only_own(pa.router)
        async with a.run(LISTEN), b.run(LISTEN), background_trio_service(pa), background_trio_service(pa.router), \
                background_trio_service(pb), background_trio_service(pb.router):
            await pa.wait_until_ready()
            await pb.wait_until_ready()
            await pa.subscribe(TOPIC)
            sent = [b"own %d" % i for i in range(MAX_REPLAYED + 5)]
            for data in sent:
                await pa.publish(TOPIC, data)
            sub_b = await pb.subscribe(TOPIC)
            await b.connect(info_from_p2p_addr(a.get_addrs()[0]))
            got: list[bytes] = []
            with trio.move_on_after(3):
                while True:
                    got.append((await sub_b.get()).data)
            assert sorted(got) == sorted(sent[-MAX_REPLAYED:])

    trio.run(main)
