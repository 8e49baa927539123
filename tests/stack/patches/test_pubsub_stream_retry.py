"""p2p_fast.stack.patches.pubsub_stream_retry: when our pubsub stream to a new peer fails its protocol negotiation
(here: the peer's pubsub handler is not registered yet when the connection comes up), stock py-libp2p gives up on
the peer for as long as the connection lives: it gets none of our messages. With the patch the stream is retried
and the peer gets them once its handler is there."""

from __future__ import annotations

import logging

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast.stack.patches.pubsub_stream_retry import retry_negotiation_failures
from pubsub_patch_helpers import TOPIC, build_pubsub

pytestmark = pytest.mark.usefixtures("libp2p_patched")
LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
PROTOCOL = "/meshsub/1.1.0"


@pytest.mark.parametrize("patched", [False, True], ids=["stock", "patched"])
def test_a_peer_whose_pubsub_handler_came_late_gets_our_messages_only_with_the_patch(patched, caplog):
    caplog.set_level(logging.DEBUG, logger="libp2p.pubsub.pubsub")

    async def main() -> None:
        a, b = new_host(key_pair=create_new_key_pair()), new_host(key_pair=create_new_key_pair())
        pa, pb = build_pubsub(a, True), build_pubsub(b, True)
        if patched:
            retry_negotiation_failures(pa)
        async with a.run(LISTEN), b.run(LISTEN), background_trio_service(pa), background_trio_service(pa.router), \
                background_trio_service(pb), background_trio_service(pb.router):
            await pa.wait_until_ready()
            await pb.wait_until_ready()
            sub = await pb.subscribe(TOPIC)
            b.remove_stream_handler(PROTOCOL)  # b's pubsub handler not there when a connects
            await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
            with trio.fail_after(15):
                # b's own stream to a works: a learns b's subscription; a's stream to b has failed at least once
                while not (b.get_id() in pa.peer_topics.get(TOPIC, ()) and any(
                        r.getMessage().startswith(("failed to register pubsub peer", "failed to open pubsub stream"))
                        and str(b.get_id()) in r.getMessage() for r in caplog.records)):
                    await trio.sleep(0.05)
            b.set_stream_handler(PROTOCOL, pb.stream_handler)  # now it is
            got = None
            with trio.move_on_after(8):  # the patched retry comes within 0.5 + 1 + 2 + 4 s
                while b.get_id() not in pa.peers:
                    await trio.sleep(0.05)
                await pa.publish(TOPIC, b"hello")
                got = (await sub.get()).data
            if patched:
                assert got == b"hello"
            else:
                assert got is None and b.get_id() not in pa.peers  # gave up: a one-way link
                assert any(r.getMessage().startswith("failed to register pubsub peer") for r in caplog.records)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await a.disconnect(b.get_id())
                await b.disconnect(a.get_id())

    trio.run(main)
