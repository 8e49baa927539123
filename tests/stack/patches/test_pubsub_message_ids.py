"""p2p_fast.stack.patches.pubsub_message_ids: the message id is computed once per message where stock py-libp2p
computes it on every step of a message's way, and our caches replace the ones py-libp2p built."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast._ext import SeenCache, ValidationCache, message_id
from p2p_fast.stack.patches import pubsub_message_ids
from p2p_fast.stack.patches.pubsub_message_ids import _MemoMessageId

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
TOPIC = "p2p-fast/message-ids-test"
pytestmark = pytest.mark.usefixtures("libp2p_patched")


def test_message_id_is_computed_once_per_message():
    calls = []

    def counting(msg):
        calls.append(msg)
        return message_id(msg)

    memo = _MemoMessageId(counting)
    m1 = rpc_pb2.Message(data=b"x", from_id=b"peer", seqno=b"\x00" * 8)
    m2 = rpc_pb2.Message(data=b"y", from_id=b"peer", seqno=b"\x00" * 8)
    assert [memo(m1) for _ in range(5)] == [message_id(m1)] * 5
    assert memo(m2) == message_id(m2) != message_id(m1)
    assert memo(m1) == message_id(m1)
    assert len(calls) == 3


def test_a_published_message_costs_several_id_computations_in_stock_and_one_patched():
    """A real Pubsub publishes one message to a topic it subscribes to: stock asks the id function on every step
    (seen check, mark seen, router, mcache ...); with the patch's constructor argument it runs once."""

    async def id_calls(memo: bool) -> int:
        calls = []

        def counting(msg):
            calls.append(msg)
            return message_id(msg)

        host = new_host(key_pair=create_new_key_pair())
        router = GossipSub(protocols=["/meshsub/1.1.0"], degree=6, degree_low=4, degree_high=12,
                           heartbeat_interval=1, heartbeat_initial_delay=0.05)
        pubsub = Pubsub(host, router, msg_id_constructor=_MemoMessageId(counting) if memo else counting)
        async with host.run(LISTEN), background_trio_service(pubsub), background_trio_service(router):
            await pubsub.wait_until_ready()
            sub = await pubsub.subscribe(TOPIC)
            await pubsub.publish(TOPIC, b"hello")
            with trio.fail_after(10):
                assert (await sub.get()).data == b"hello"
        return len(calls)

    stock = trio.run(id_calls, False)
    assert stock >= 3, stock
    assert trio.run(id_calls, True) == 1


def test_our_caches_replace_the_stock_ones_and_the_old_sweeper_stops():
    host = new_host(key_pair=create_new_key_pair())
    pubsub = Pubsub(host, GossipSub(protocols=["/meshsub/1.1.0"], degree=6, degree_low=4, degree_high=12),
                    **pubsub_message_ids.constructor_kwargs())
    stock_seen, stock_validation = pubsub.seen_messages, pubsub.validation_cache
    assert not isinstance(stock_seen, SeenCache) and not isinstance(stock_validation, ValidationCache)
    stopped = []
    stock_stop = stock_seen.stop
    stock_seen.stop = lambda: (stopped.append(True), stock_stop())  # the stock cache's sweeper thread
    pubsub_message_ids.replace_caches(pubsub, 120)
    assert isinstance(pubsub.seen_messages, SeenCache) and isinstance(pubsub.validation_cache, ValidationCache)
    assert stopped == [True]
    assert isinstance(pubsub._msg_id_constructor, _MemoMessageId)


@pytest.mark.parametrize("patched", [False, True], ids=["stock", "patched"])
def test_an_ihave_for_a_message_already_received_asks_for_it_again_only_in_stock(patched, monkeypatch):
    """With our message-id function, stock GossipSub's message cache still keys by from + seqno: the ids in its IHAVE
    are never in the receiver's seen cache, so a peer that has the message asks for it again (IWANT) and gets it
    sent once more. Patched, the cache keys by the Pubsub's id function and a received message is not asked for."""

    def pubsub_on(host) -> Pubsub:
        router = GossipSub(protocols=["/meshsub/1.1.0"], degree=6, degree_low=4, degree_high=12,
                           heartbeat_interval=30, heartbeat_initial_delay=0.05, spam_protection_enabled=False)
        pubsub = Pubsub(host, router, **pubsub_message_ids.constructor_kwargs())
        if patched:
            pubsub_message_ids.replace_caches(pubsub, 120)
        return pubsub

    async def main() -> None:
        a, b = new_host(key_pair=create_new_key_pair()), new_host(key_pair=create_new_key_pair())
        pa, pb = pubsub_on(a), pubsub_on(b)
        async with a.run(LISTEN), b.run(LISTEN), background_trio_service(pa), background_trio_service(pa.router), \
                background_trio_service(pb), background_trio_service(pb.router):
            await pa.wait_until_ready()
            await pb.wait_until_ready()
            await pa.subscribe(TOPIC)
            sub_b = await pb.subscribe(TOPIC)
            await b.connect(info_from_p2p_addr(a.get_addrs()[0]))
            # B in A's mesh, not only subscribed: A publishes to its mesh, and a publish that raced B's GRAFT went
            # nowhere (it failed so in one clean-clone run)
            with trio.fail_after(20):
                while b.get_id() not in pa.peers or b.get_id() not in pa.peer_topics.get(TOPIC, ()) \
                        or b.get_id() not in pa.router.mesh.get(TOPIC, ()):
                    await trio.sleep(0.02)
            await pa.publish(TOPIC, b"once")
            with trio.fail_after(10):
                assert (await sub_b.get()).data == b"once"
            ids = pa.router.mcache.window(TOPIC)
            assert len(ids) == 1
            wanted: list[list[bytes]] = []

            async def emit_iwant(msg_ids, to_peer):
                wanted.append(list(msg_ids))

            monkeypatch.setattr(pb.router, "emit_iwant", emit_iwant)
            await pb.router.handle_ihave(rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=ids), a.get_id())
            assert wanted == ([] if patched else [ids])
            if patched:
                assert ids == [pa.get_message_id(pa.router.mcache.get(ids[0]))]

    trio.run(main)
