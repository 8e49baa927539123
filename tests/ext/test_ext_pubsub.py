"""The hot paths plugged into real py-libp2p objects: two hosts over TCP+Noise+Yamux, GossipSub, our message id,
seen-cache and validation cache on both sides."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

TOPIC = "p2p-fast/ext-test"


def _node(msgid, seen):
    host = new_host()
    router = GossipSub(
        protocols=["/meshsub/1.1.0"],
        degree=2,
        degree_low=1,
        degree_high=3,
        heartbeat_interval=0.2,  # type: ignore[arg-type]
        heartbeat_initial_delay=0.05,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host, router, msg_id_constructor=msgid.message_id)
    pubsub.seen_messages.stop()
    pubsub.seen_messages = seen.SeenCache(120)
    pubsub.validation_cache = seen.ValidationCache(300, 1000)
    return host, router, pubsub


async def _exchange(msgid, seen) -> None:
    (host_a, router_a, pub_a), (host_b, router_b, pub_b) = _node(msgid, seen), _node(msgid, seen)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with host_a.run(listen), host_b.run(listen):
        async with background_trio_service(pub_a), background_trio_service(router_a), \
                background_trio_service(pub_b), background_trio_service(router_b):
            await pub_a.wait_until_ready()
            await pub_b.wait_until_ready()
            sub_b = await pub_b.subscribe(TOPIC)
            await pub_a.subscribe(TOPIC)
            addr = host_b.get_addrs()[0]
            await host_a.connect(info_from_p2p_addr(addr))
            with trio.fail_after(20):
                received = None
                while received is None:  # publish until the mesh carries one message over
                    await pub_a.publish(TOPIC, b"ext hot paths")
                    with trio.move_on_after(0.2):
                        received = await sub_b.get()
            assert received.data == b"ext hot paths"
            assert received.from_id == host_a.get_id().to_bytes()
            mid = msgid.message_id(received)
            # both sides marked it seen under our id, in our cache
            assert isinstance(pub_b.seen_messages, seen.SeenCache)
            assert pub_b.seen_messages.has(mid)
            assert pub_a.seen_messages.has(mid)
            assert pub_b.get_message_id(received) == mid
            assert pub_b.seen_messages.length() >= 1
            # a second delivery of the same message is dropped as seen
            await pub_b.push_msg(host_a.get_id(), received)
            with trio.move_on_after(0.3) as scope:
                dup = await sub_b.get()
                assert dup.seqno != received.seqno, "a seen message was delivered twice"
            del scope
            await host_a.disconnect(host_b.get_id())  # closes the connection's sockets before the swarms stop


@pytest.mark.timeout(60)
def test_gossip_between_two_real_hosts(msgid_impl, seen_impl) -> None:
    trio.run(_exchange, msgid_impl, seen_impl)
