"""The pubsub patches of p2p_fast/stack/patches/pubsub_tuning.py: each does less work than stock py-libp2p and gives the same
answers, and none of them touches a Pubsub we did not tune."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.tools.anyio_service import background_trio_service

import libp2p.pubsub.pubsub as pubsub_mod
from p2p_fast.stack.patches import pubsub_tuning
from p2p_fast._ext import message_id
from p2p_fast.stack.patches.pubsub_tuning import _LOCAL_RECORDS, _MemoMessageId, tune_pubsub

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
TOPIC = "p2p-fast/tuning-test"
pytestmark = pytest.mark.usefixtures("libp2p_patched")  # the hooks a built host would have


def make_pubsub(host, tuned: bool) -> Pubsub:
    router = GossipSub(protocols=["/meshsub/1.1.0"], degree=6, degree_low=4, degree_high=12,
                       heartbeat_interval=1, heartbeat_initial_delay=0.05, spam_protection_enabled=False)
    if not tuned:
        return Pubsub(host, router)
    pubsub = Pubsub(host, router, **tune_pubsub.constructor_kwargs())
    tune_pubsub.after_construct(pubsub, 120)
    return pubsub


class Counter:
    def __init__(self, fn):
        self.fn = fn
        self.calls: list[tuple] = []

    def __call__(self, *args):
        self.calls.append(args)
        return self.fn(*args)


@pytest.fixture
def counted(monkeypatch):
    """The stock functions our hooks fall back to, counted."""
    out = {}
    for name in ("STOCK_ENV_TO_SEND", "STOCK_CONSUME_RECORD", "VERIFY"):
        out[name] = Counter(getattr(pubsub_tuning, name))
        monkeypatch.setattr(pubsub_tuning, name, out[name])
    return out


def test_our_record_is_built_once_and_rebuilt_when_addresses_change(counted, monkeypatch):
    async def main():
        host, other = new_host(key_pair=create_new_key_pair()), new_host(key_pair=create_new_key_pair())
        async with host.run(LISTEN), other.run(LISTEN):
            make_pubsub(host, tuned=True)
            make_pubsub(other, tuned=False)
            stock_bytes, _ = pubsub_tuning.STOCK_ENV_TO_SEND.fn(host)
            counted["STOCK_ENV_TO_SEND"].calls.clear()
            sent = {pubsub_mod.env_to_send_in_RPC(host)[0] for _ in range(200)}
            assert sent == {stock_bytes}  # the same envelope stock would send
            assert len(counted["STOCK_ENV_TO_SEND"].calls) <= 1

            # an untuned host in the same process still goes through stock every time
            for _ in range(3):
                pubsub_mod.env_to_send_in_RPC(other)
            assert sum(1 for c in counted["STOCK_ENV_TO_SEND"].calls if c[0] is other) == 3

            # our addresses change: the next check (at most ADDRS_RECHECK_S later) issues a new record
            extra = multiaddr.Multiaddr(f"/ip4/10.1.2.3/tcp/4001/p2p/{host.get_id()}")
            addrs = host.get_addrs() + [extra]
            monkeypatch.setattr(host, "get_addrs", lambda: addrs)
            _LOCAL_RECORDS[host].checked_at = 0.0
            new_bytes, created = pubsub_mod.env_to_send_in_RPC(host)
            assert created and new_bytes != stock_bytes
            _, record = consume_envelope(new_bytes, "libp2p-peer-record")
            assert extra in record.addrs

    trio.run(main)


def test_a_peer_record_is_verified_once_per_bytes(counted):
    async def main():
        a, b, c = (new_host(key_pair=create_new_key_pair()) for _ in range(3))
        async with a.run(LISTEN), b.run(LISTEN), c.run(LISTEN):
            make_pubsub(a, tuned=True)
            consume = pubsub_mod.maybe_consume_signed_record
            stock = counted["STOCK_CONSUME_RECORD"]
            rpc = rpc_pb2.RPC(senderRecord=pubsub_tuning.STOCK_ENV_TO_SEND.fn(b)[0])
            assert all(consume(rpc, a, b.get_id()) for _ in range(100))
            assert len(stock.calls) == 1
            assert a.get_peerstore().get_peer_record(b.get_id()) is not None

            # the same record claimed by another peer: rejected, every time
            assert not consume(rpc, a, c.get_id())
            assert not consume(rpc, a, c.get_id())
            assert len(stock.calls) == 3

            # a tampered record: rejected
            bad = bytearray(rpc.senderRecord)
            bad[-5] ^= 0xFF
            assert not consume(rpc_pb2.RPC(senderRecord=bytes(bad)), a, b.get_id())

            # the peerstore dropped the record: verified (and stored) again
            stock.calls.clear()
            a.get_peerstore().peer_record_map.pop(b.get_id())
            assert consume(rpc, a, b.get_id())
            assert len(stock.calls) == 1 and a.get_peerstore().get_peer_record(b.get_id()) is not None

    trio.run(main)


def _signed(pubsub: Pubsub, data: bytes, seqno: int) -> rpc_pb2.Message:
    """A message exactly as Pubsub.publish builds and signs it."""
    msg = rpc_pb2.Message(data=data, topicIDs=[TOPIC], from_id=pubsub.my_id.to_bytes(), seqno=seqno.to_bytes(8, "big"))
    msg.signature = pubsub.sign_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = pubsub.host.get_public_key().serialize()
    return msg


def test_only_our_own_last_signature_skips_verification(counted):
    a, b = new_host(key_pair=create_new_key_pair()), new_host(key_pair=create_new_key_pair())
    ours, theirs = make_pubsub(a, tuned=True), make_pubsub(b, tuned=False)
    validate = pubsub_mod.signature_validator
    stock = counted["VERIFY"]

    mine = _signed(ours, b"hello", 1)
    assert validate(mine) and not stock.calls  # our own fresh signature, checked by our publish: no Ed25519 check
    assert validate(mine) and len(stock.calls) == 1  # any later check of it (e.g. a receiver's) verifies
    stock.calls.clear()

    tampered = rpc_pb2.Message()
    tampered.CopyFrom(mine)
    tampered.data = b"hellO"
    assert not validate(tampered) and len(stock.calls) == 1  # same signature, other payload: verified, fails

    from_b = _signed(theirs, b"hi", 7)
    assert validate(from_b) and len(stock.calls) == 2  # others' messages: always verified

    forged = _signed(theirs, b"hi", 8)
    forged.from_id = a.get_id().to_bytes()  # claims to be us, signed by b
    assert not validate(forged) and len(stock.calls) == 3

    older = _signed(ours, b"one", 2)
    _signed(ours, b"two", 3)  # our signer moved on: the older message is verified like any other
    assert validate(older) and len(stock.calls) == 4


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


def test_tuned_pubsubs_exchange_messages_and_verify_each_others(counted):
    """End to end: two tuned pubsubs gossip both ways; each message is signature-checked once, by its receiver."""
    n = 20

    async def main():
        hosts = [new_host(key_pair=create_new_key_pair()) for _ in range(2)]
        pubsubs = [make_pubsub(h, tuned=True) for h in hosts]
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
        verified_from = [msg.from_id for (msg,) in counted["VERIFY"].calls]
        for h in hosts:
            assert verified_from.count(h.get_id().to_bytes()) == n  # by the other side only

    trio.run(main)


def test_verify_signature_agrees_with_stock():
    """verify_signature against py-libp2p's signature_validator on good, tampered and mis-keyed messages, with the
    key inlined in the peer id (Ed25519) and sent in msg.key (RSA)."""
    from libp2p.crypto.rsa import create_new_key_pair as create_rsa_key_pair
    from libp2p.peer.id import ID

    from p2p_fast.stack.patches.pubsub_tuning import STOCK_SIGNATURE_VALIDATOR, verify_signature

    def signed(key_pair, data: bytes, seqno: int, with_key: bool = True) -> rpc_pb2.Message:
        from_id = ID.from_pubkey(key_pair.public_key).to_bytes()
        msg = rpc_pb2.Message(data=data, topicIDs=[TOPIC], from_id=from_id, seqno=seqno.to_bytes(8, "big"))
        msg.signature = key_pair.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
        if with_key:
            msg.key = key_pair.public_key.serialize()
        return msg

    ed, ed2, rsa = create_new_key_pair(), create_new_key_pair(), create_rsa_key_pair(2048)
    cases = []
    for kp in (ed, rsa):
        good = signed(kp, b"data", 1)
        cases.append(good)
        for field, value in (("data", b"datA"), ("seqno", b"\x00" * 7 + b"\x02"), ("signature", b"\x01" * 64)):
            bad = rpc_pb2.Message()
            bad.CopyFrom(good)
            setattr(bad, field, value)
            cases.append(bad)
        nosig = rpc_pb2.Message()
        nosig.CopyFrom(good)
        nosig.ClearField("signature")
        cases.append(nosig)
    cases.append(signed(ed, b"no key field", 2, with_key=False))  # Ed25519: the key is in the id
    cases.append(signed(rsa, b"no key field", 2, with_key=False))  # RSA: no key, cannot verify
    wrong_key = signed(rsa, b"x", 3)
    wrong_key.key = ed2.public_key.serialize()  # a key that does not hash to the sender
    cases.append(wrong_key)
    impostor = signed(ed2, b"x", 4)
    impostor.from_id = ID.from_pubkey(ed.public_key).to_bytes()
    cases.append(impostor)

    for _ in range(2):  # second round: keys come from the cache
        results = [(verify_signature(m), STOCK_SIGNATURE_VALIDATOR(m)) for m in cases]
        assert [ours for ours, _ in results] == [stock for _, stock in results]
    assert [ours for ours, _ in results].count(True) == 3


def test_queued_publishes_leave_in_one_rpc_in_order():
    """batched_sending: publish-only RPCs queued together become one RPC (order kept, size capped); an RPC with
    control goes out alone and in its place."""
    from libp2p.pubsub.rpc_queue import RpcQueue

    from p2p_fast.stack.patches.pubsub_tuning import MERGE_MAX_MESSAGES, batched_sending

    class FakePubsub:
        max_inbound_rpc_size = 10_000

        def __init__(self):
            self.written: list[rpc_pb2.RPC] = []

        async def write_msg(self, stream, rpc):
            self.written.append(rpc)
            await trio.sleep(0)
            return True

        def _handle_dead_peer(self, peer_id):
            raise AssertionError("no error expected")

    def publish(i: int, size: int = 100) -> rpc_pb2.RPC:
        return rpc_pb2.RPC(publish=[rpc_pb2.Message(data=bytes([i]) * size, seqno=i.to_bytes(8, "big"))],
                           senderRecord=b"record")

    async def main():
        pubsub, queue = FakePubsub(), RpcQueue()
        for i in range(5):
            queue.push(publish(i))
        queue.push(rpc_pb2.RPC(control=rpc_pb2.ControlMessage(graft=[rpc_pb2.ControlGraft(topicID=TOPIC)])))
        for i in range(5, 8):
            queue.push(publish(i))
        for i in range(8, 40):
            if not queue.push(publish(i, 3000)):  # big ones: three fit under the 10 kB limit
                break
        queue.close()
        await batched_sending(pubsub, None, None, queue)
        shapes = [([m.data[0] for m in rpc.publish], rpc.HasField("control")) for rpc in pubsub.written]
        assert shapes[0] == ([0, 1, 2, 3, 4], False)
        assert shapes[1] == ([], True)
        assert all(rpc.senderRecord == b"record" for rpc in pubsub.written if rpc.publish)
        sent = [i for ids, _ in shapes for i in ids]
        assert sent == sorted(sent) and len(sent) == len(set(sent))
        assert all(rpc.ByteSize() <= 10_000 for rpc in pubsub.written)
        # at most MERGE_MAX_MESSAGES messages per RPC (a receiver's subscription buffer holds 32)
        pubsub3, q3 = FakePubsub(), RpcQueue()
        for i in range(30):
            q3.push(publish(i, 10))
        q3.close()
        await batched_sending(pubsub3, None, None, q3)
        assert [len(r.publish) for r in pubsub3.written] == [MERGE_MAX_MESSAGES, 30 - MERGE_MAX_MESSAGES]
        # a lone message is not held back: it goes out as it was queued
        pubsub2, q2 = FakePubsub(), RpcQueue()
        q2.push(publish(1))
        q2.close()
        await batched_sending(pubsub2, None, None, q2)
        assert [len(r.publish) for r in pubsub2.written] == [1]

    trio.run(main)


def test_a_burst_of_messages_fits_the_subscription_buffer():
    """py-libp2p hands a whole RPC's messages to the subscription before the reader runs. Stock: a buffer of 32,
    the rest of a burst of 100 is dropped; patched: all 100 fit."""
    from p2p_fast.stack.patches.pubsub_tuning import SUBSCRIPTION_BUFFER

    async def delivered(tuned: bool) -> list[bytes]:
        host = new_host(key_pair=create_new_key_pair())
        pubsub = make_pubsub(host, tuned=tuned)
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

    pubsub_tuning.revert()
    try:
        stock = trio.run(delivered, False)
    finally:
        pubsub_tuning.apply()
    assert stock == [b"%d" % i for i in range(32)]  # the limit: SUBSCRIPTION_CHANNEL_SIZE, the rest dropped
    assert SUBSCRIPTION_BUFFER >= 100
    assert trio.run(delivered, True) == [b"%d" % i for i in range(100)]


def test_tuning_a_pubsub_needs_the_process_wide_hooks():
    host = new_host(key_pair=create_new_key_pair())
    pubsub_tuning.revert()
    try:
        with pytest.raises(RuntimeError, match="apply_all"):
            make_pubsub(host, tuned=True)
    finally:
        pubsub_tuning.apply()
