"""p2p_fast.stack.patches.pubsub_batched_sending: stock py-libp2p writes one RPC per queued item; patched, the
publish-only RPCs already queued leave in one (order kept, size and count capped), control RPCs alone and in place."""

from __future__ import annotations

import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue

from p2p_fast.stack.patches import pubsub_batched_sending
from p2p_fast.stack.patches.pubsub_batched_sending import MERGE_MAX_MESSAGES, batched_sending

TOPIC = "p2p-fast/batched-sending-test"


class WritingPubsub:
    """What the sending loop uses of a Pubsub: its inbound limit, write_msg and the dead-peer hook."""

    max_inbound_rpc_size = 10_000

    def __init__(self):
        self.written: list[rpc_pb2.RPC] = []

    async def write_msg(self, stream, rpc):
        self.written.append(rpc)
        await trio.sleep(0)
        return True

    def _handle_dead_peer(self, peer_id):
        raise AssertionError("no error expected")


def _publish(i: int, size: int = 100) -> rpc_pb2.RPC:
    return rpc_pb2.RPC(publish=[rpc_pb2.Message(data=bytes([i]) * size, seqno=i.to_bytes(8, "big"))],
                       senderRecord=b"record")


def test_queued_publishes_leave_in_one_rpc_in_order():
    """batched_sending: publish-only RPCs queued together become one RPC (order kept, size capped); an RPC with
    control goes out alone and in its place."""

    async def main():
        pubsub, queue = WritingPubsub(), RpcQueue()
        for i in range(5):
            queue.push(_publish(i))
        queue.push(rpc_pb2.RPC(control=rpc_pb2.ControlMessage(graft=[rpc_pb2.ControlGraft(topicID=TOPIC)])))
        for i in range(5, 8):
            queue.push(_publish(i))
        for i in range(8, 40):
            if not queue.push(_publish(i, 3000)):  # big ones: three fit under the 10 kB limit
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
        pubsub3, q3 = WritingPubsub(), RpcQueue()
        for i in range(30):
            q3.push(_publish(i, 10))
        q3.close()
        await batched_sending(pubsub3, None, None, q3)
        assert [len(r.publish) for r in pubsub3.written] == [MERGE_MAX_MESSAGES, 30 - MERGE_MAX_MESSAGES]
        # a lone message is not held back: it goes out as it was queued
        pubsub2, q2 = WritingPubsub(), RpcQueue()
        q2.push(_publish(1))
        q2.close()
        await batched_sending(pubsub2, None, None, q2)
        assert [len(r.publish) for r in pubsub2.written] == [1]

    trio.run(main)


def test_stock_writes_one_rpc_per_queued_publish_and_the_patch_merges_them():
    """A real Pubsub's sending loop over the same queue of ten publishes: stock ``handle_sending_messages`` writes
    ten RPCs; after ``batch_sending`` one; after its undo ten again."""
    host = new_host(key_pair=create_new_key_pair())
    pubsub = Pubsub(host, GossipSub(protocols=["/meshsub/1.1.0"], degree=6, degree_low=4, degree_high=12))
    written: list[rpc_pb2.RPC] = []

    async def write_msg(stream, rpc):
        written.append(rpc)
        await trio.sleep(0)
        return True

    pubsub.write_msg = write_msg  # type: ignore[method-assign]  # where the loop's RPCs go (no peer stream here)

    async def rpcs_written() -> list[int]:
        written.clear()
        queue = RpcQueue()
        for i in range(10):
            queue.push(_publish(i))
        queue.close()
        await pubsub.handle_sending_messages(None, None, queue)
        assert [m.data[0] for rpc in written for m in rpc.publish] == list(range(10))
        return [len(rpc.publish) for rpc in written]

    assert trio.run(rpcs_written) == [1] * 10  # stock
    undo = pubsub_batched_sending.batch_sending(pubsub)
    assert trio.run(rpcs_written) == [10]
    undo()
    assert trio.run(rpcs_written) == [1] * 10
