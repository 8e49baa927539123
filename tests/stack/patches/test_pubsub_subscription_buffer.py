"""p2p_fast.stack.patches.pubsub_subscription_buffer: stock py-libp2p's subscription buffer holds 32 messages and
drops the rest of a burst; patched, the burst fits."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.pubsub.pb import rpc_pb2
from libp2p.tools.anyio_service import background_trio_service

import libp2p.pubsub.pubsub as pubsub_mod
from p2p_fast.stack.patches import pubsub_subscription_buffer
from p2p_fast.stack.patches.pubsub_subscription_buffer import SUBSCRIPTION_BUFFER
from pubsub_patch_helpers import build_pubsub

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
TOPIC = "p2p-fast/subscription-buffer-test"
pytestmark = pytest.mark.usefixtures("libp2p_patched")


def test_a_burst_of_messages_fits_the_subscription_buffer():
    """py-libp2p hands a whole RPC's messages to the subscription before the reader runs. Stock: a buffer of 32,
    the rest of a burst of 100 is dropped; patched: all 100 fit."""

    async def delivered(tuned: bool) -> list[bytes]:
        host = new_host(key_pair=create_new_key_pair())
        pubsub = build_pubsub(host, tuned)
        async with host.run(LISTEN), background_trio_service(pubsub), background_trio_service(pubsub.router):
            await pubsub.wait_until_ready()
            sub = await pubsub.subscribe(TOPIC)
            burst = [rpc_pb2.Message(data=b"%d" % i, topicIDs=[TOPIC]) for i in range(100)]
            for msg in burst:  # no await in between: the reader cannot run
                pubsub.notify_subscriptions(msg)
            got = []
            while True:
                try:
                    got.append(sub.receive_channel.receive_nowait().data)
                except trio.WouldBlock:
                    return got

    pubsub_subscription_buffer.revert()
    try:
        assert pubsub_mod.SUBSCRIPTION_CHANNEL_SIZE == pubsub_subscription_buffer.STOCK_SUBSCRIPTION_CHANNEL_SIZE
        stock = trio.run(delivered, False)
    finally:
        pubsub_subscription_buffer.apply()
    assert stock == [b"%d" % i for i in range(32)]  # the limit: SUBSCRIPTION_CHANNEL_SIZE, the rest dropped
    assert SUBSCRIPTION_BUFFER >= 100
    assert trio.run(delivered, True) == [b"%d" % i for i in range(100)]
