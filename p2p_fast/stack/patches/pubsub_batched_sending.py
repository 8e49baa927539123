"""Pubsub hook 6 of ``pubsub_tuning``: publishes already queued for a peer leave in one RPC.

The per-peer sending task writes one RPC per queued item (stock ``Pubsub.handle_sending_messages``).
:func:`batched_sending` takes whatever is already queued when it wakes and merges consecutive publish-only RPCs into
one (messages in order, one sender record, at most ``MERGE_MAX_MESSAGES`` messages and ``MERGE_LIMIT`` bytes, never
more than this node's own inbound RPC limit); an RPC with subscriptions or control goes out on its own, in order.
One RPC with several messages is plain pubsub (go-libp2p sends and accepts them); it saves the receiver a read, a
parse, a record check and a metrics event per message, and both sides a Yamux frame, a Noise message and a syscall.
Nothing waits to be merged: a message alone in the queue goes out alone.

Per-instance: :func:`batch_sending` sets the Pubsub's own ``handle_sending_messages`` (an instance attribute
shadowing the method; the Pubsub spawns one per peer stream) and returns its undo.

Upstream: ``libp2p/pubsub/pubsub.py``, ``Pubsub.handle_sending_messages`` (py-libp2p 0.8.1) -- a limit, not a bug
(bench/RESULTS.md); no upstream issue was found. Shown by ``tests/stack/patches/test_pubsub_batched_sending.py``.
"""

from __future__ import annotations

from typing import Any, Callable

from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.pubsub.pb import rpc_pb2

MERGE_LIMIT = 64 * 1024
# A receiver's py-libp2p delivers a whole RPC's messages to its subscription buffer (32 messages) before its
# reader task runs: half of it leaves room for what is already buffered.
MERGE_MAX_MESSAGES = 16


def _publish_only(rpc: Any) -> bool:
    return not rpc.subscriptions and not rpc.HasField("control")


async def batched_sending(pubsub: Any, peer_id: Any, stream: Any, queue: Any) -> None:
    """``Pubsub.handle_sending_messages`` that merges the publish-only RPCs already queued (module doc)."""
    limit = min(MERGE_LIMIT, pubsub.max_inbound_rpc_size)
    carry = None
    try:
        while True:
            rpc = carry if carry is not None else await queue.pop()
            carry = None
            if rpc is None:
                return
            closed = False
            if len(queue) and _publish_only(rpc):
                size, count = rpc.ByteSize(), len(rpc.publish)
                merged = None
                while len(queue):
                    nxt = await queue.pop()  # returns at once: the queue is not empty
                    if nxt is None:
                        closed = True
                        break
                    extra = nxt.ByteSize()
                    if (not _publish_only(nxt) or size + extra > limit
                            or count + len(nxt.publish) > MERGE_MAX_MESSAGES):
                        carry = nxt
                        break
                    if merged is None:
                        merged = rpc_pb2.RPC()
                        merged.CopyFrom(rpc)
                    merged.publish.extend(nxt.publish)
                    size += extra
                    count += len(nxt.publish)
                if merged is not None:
                    rpc = merged
            if not await pubsub.write_msg(stream, rpc) or closed:
                return
    except (StreamClosed, StreamReset):
        pubsub._handle_dead_peer(peer_id)
    except Exception:
        pubsub._handle_dead_peer(peer_id)


def batch_sending(pubsub: Any) -> Callable[[], None]:
    """Make ``pubsub``'s per-peer sending tasks merge queued publishes (module doc). Returns the undo (streams
    opened before it keep the sender they started with)."""
    pubsub.handle_sending_messages = lambda peer_id, stream, queue: batched_sending(pubsub, peer_id, stream,
                                                                                   queue)

    def undo() -> None:
        vars(pubsub).pop("handle_sending_messages", None)

    return undo
