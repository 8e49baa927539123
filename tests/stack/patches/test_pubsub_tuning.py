"""tune_pubsub (p2p_fast.stack.patches.pubsub_tuning) applies the seven pubsub patches to a Pubsub, refuses to run
without their process-wide halves, and two tuned Pubsubs exchange messages with each message signature-checked once,
by its receiver. Each patch has its own stock-vs-patched test (test_pubsub_<hook>.py)."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast._ext import SeenCache
from p2p_fast.stack import patches
from p2p_fast.stack.patches import pubsub_signer_keys, pubsub_tuning
from p2p_fast.stack.patches.pubsub_local_record import _LOCAL_RECORDS
from p2p_fast.stack.patches.pubsub_message_ids import _MemoMessageId
from p2p_fast.stack.patches.pubsub_own_signature import _RecordingSigner
from p2p_fast.stack.patches.pubsub_peer_records import _PEER_RECORDS
from pubsub_patch_helpers import build_pubsub, count

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
TOPIC = "p2p-fast/tuning-test"
pytestmark = pytest.mark.usefixtures("libp2p_patched")  # the hooks a built host would have


def test_tune_pubsub_applies_all_seven_hooks():
    host = new_host(key_pair=create_new_key_pair())
    pubsub = build_pubsub(host, True)
    assert isinstance(pubsub._msg_id_constructor, _MemoMessageId) and isinstance(pubsub.seen_messages, SeenCache)
    assert host in _LOCAL_RECORDS and host in _PEER_RECORDS
    assert isinstance(pubsub.sign_key, _RecordingSigner)
    assert "handle_sending_messages" in vars(pubsub)
    assert all(part.PATCH.is_applied() for part in pubsub_tuning.PROCESS_WIDE_PARTS)
    assert all(part.__name__.rsplit(".", 1)[1] in patches.PROCESS_WIDE for part in pubsub_tuning.PROCESS_WIDE_PARTS)


def test_tuned_pubsubs_exchange_messages_and_verify_each_others(monkeypatch):
    """End to end: two tuned pubsubs gossip both ways; each message is signature-checked once, by its receiver."""
    n = 20
    verified = count(monkeypatch, pubsub_signer_keys, "VERIFY")

    async def main():
        hosts = [new_host(key_pair=create_new_key_pair()) for _ in range(2)]
        pubsubs = [build_pubsub(h, True) for h in hosts]
        async with hosts[0].run(LISTEN), hosts[1].run(LISTEN):
            async with background_trio_service(pubsubs[0]), background_trio_service(pubsubs[0].router), \
                    background_trio_service(pubsubs[1]), background_trio_service(pubsubs[1].router):
                for p in pubsubs:
                    await p.wait_until_ready()
                subs = [await p.subscribe(TOPIC) for p in pubsubs]
                await hosts[0].connect(info_from_p2p_addr(hosts[1].get_addrs()[0]))
                got: list[set[bytes]] = [set(), set()]

                async def collect(k: int) -> None:
                    while len(got[k]) < 2 * n:
                        got[k].add((await subs[k].get()).data)

                with trio.fail_after(20):
                    while not all(len(p.router.mesh.get(TOPIC, ())) for p in pubsubs):
                        await trio.sleep(0.05)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(collect, 0)
                        nursery.start_soon(collect, 1)
                        for i in range(n):
                            await pubsubs[0].publish(TOPIC, b"a%d" % i)
                            await pubsubs[1].publish(TOPIC, b"b%d" % i)
                            await trio.sleep(0.01)  # Pubsub.publish never yields (docs/libp2p-pitfalls.md, 2)
                want = {b"a%d" % i for i in range(n)} | {b"b%d" % i for i in range(n)}
                assert got == [want, want]
        verified_from = [msg.from_id for (msg,) in verified.calls]
        for h in hosts:
            assert verified_from.count(h.get_id().to_bytes()) == n  # by the other side only

    trio.run(main)


@pytest.mark.parametrize("part", [p.__name__.rsplit(".", 1)[1] for p in pubsub_tuning.PROCESS_WIDE_PARTS])
def test_tuning_a_pubsub_needs_the_process_wide_hooks(part):
    host = new_host(key_pair=create_new_key_pair())
    module = patches.patch_module(part)
    module.revert()
    try:
        with pytest.raises(RuntimeError, match="apply_all"):
            build_pubsub(host, True)
    finally:
        module.apply()
