"""Work-arounds for py-libp2p 0.8.1 bugs, each applied once at import and each shown by a test in
``tests/node/test_libp2p_fixes.py``.

1. ``Swarm.dial_peer`` waits out its 250 ms "happy eyeballs" fallback timer after *every* address it starts, even
   when that dial already succeeded: the wait ends only on failure, or when ``max_connections_per_peer`` dials have
   succeeded. So every new connection costs at least 250 ms (docs/libp2p-pitfalls.md, 3; go-libp2p returns on the first
   success). The timer is a module constant, so we set it to zero: addresses are then dialed concurrently and the
   first success is not held back. Our own dials pass one address at a time, so nothing extra is dialed.
2. ``MuxerMultistream.new_conn`` ignores the class registered for ``/yamux/1.0.0`` in ``new_host(muxer_opt=...)``:
   once Yamux is negotiated it always builds the stock ``Yamux`` (every other protocol gets the registered class).
   So a Yamux subclass (ours, :mod:`p2p_fast.stack.muxer`) is silently never used. We replace ``new_conn`` with one that
   builds whichever class is registered for the negotiated protocol; for a host with the stock registration it
   builds the stock ``Yamux`` exactly as before.
3. Every background task a py-libp2p service starts (``TrioManager.run_task``; Pubsub starts one per message
   received) first looks for its parent by walking the service's whole task tree (``_find_parent_task``), and a
   stream handler's task is not in that tree, so every message walks all of it: O(tasks) per message, with a
   recursive generator. We index ``FunctionTask`` objects by their trio task when they start, so the lookup is a
   dictionary hit plus a check that the task is still attached to this manager's tree (the walk's condition): the
   same answer, in O(depth).
4. ``Pubsub`` starts its message sequence-number counter at ``int(time.time())`` (seconds) and adds one per message.
   A node that published more messages than it has lived seconds (a burst, or a steady rate above 1/s) reuses its
   earlier seqnos after a restart with the same identity. GossipSub's equivocation check then sees the same
   from+seqno with other data: receivers still deliver the message locally but never forward it, and charge the
   origin -100 in its peer score, so a restarted bootstrap's gossip stopped reaching most of the network. go-libp2p
   starts the counter at the time in nanoseconds; :func:`start_seqno_from_nanoseconds` does the same for a Pubsub
   we construct (a per-instance fix, so nothing global to apply or undo).
5. ``Multiselect.negotiate`` checks that a protocol has a handler, awaits the write of its answer, and then reads
   ``self.handlers[protocol]``: a handler removed during that await (the DHT switching to client mode when AutoNAT
   finds the node private removes ``/ipfs/kad/1.0.0``) raises ``KeyError``, which is not a ``MultiselectError``,
   escapes the swarm's stream task and stops the whole node (seen: 6 of 21 nodes of a join storm on a loaded
   machine). We turn it into the ``MultiselectError`` a missing protocol gets, so only that stream fails.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import libp2p.network.swarm as _swarm
from libp2p.protocol_muxer.exceptions import MultiselectError
from libp2p.protocol_muxer.multiselect import Multiselect
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

STOCK_HAPPY_EYEBALLS_DELAY = _swarm._HAPPY_EYEBALLS_DELAY
STOCK_MUXER_NEW_CONN = MuxerMultistream.new_conn
STOCK_FIND_PARENT_TASK = TrioManager._find_parent_task
STOCK_TRIO_TASK_PROPERTY = FunctionTask.trio_task
STOCK_NEGOTIATE = Multiselect.negotiate

# trio task -> the FunctionTask running in it (fix 3); both sides weak, so finished tasks drop out.
_FUNCTION_TASK_OF: "weakref.WeakKeyDictionary[Any, weakref.ref[FunctionTask]]" = weakref.WeakKeyDictionary()


def _set_trio_task(self: FunctionTask, value: Any) -> None:
    STOCK_TRIO_TASK_PROPERTY.fset(self, value)  # type: ignore[misc]
    _FUNCTION_TASK_OF[value] = weakref.ref(self)


_INDEXED_TRIO_TASK_PROPERTY = property(STOCK_TRIO_TASK_PROPERTY.fget, _set_trio_task)


def _find_parent_task_indexed(self: TrioManager, trio_task: Any) -> Any:
    """``TrioManager._find_parent_task`` by index: the FunctionTask of ``trio_task`` if it is in this manager's
    task tree (every ancestor still lists it among its children and the top one is a root task), else None."""
    ref = _FUNCTION_TASK_OF.get(trio_task)
    task = ref() if ref is not None else None
    if task is None:
        return None
    node: Any = task
    while node.parent is not None:
        if node not in node.parent.children:
            return None
        node = node.parent
    return task if node in self._root_tasks else None


async def _new_conn_with_registered_class(self: MuxerMultistream, conn: Any, peer_id: Any) -> Any:
    """Negotiate the muxer and build the class registered for it (fix 2)."""
    protocol, transport_class = await self._selector.select(conn, conn.is_initiator, self.negotiate_timeout)
    return self._annotate_connection(transport_class(conn, peer_id), conn, protocol)


def stock_seqno_start() -> int:
    """What py-libp2p 0.8.1 sets ``Pubsub.counter`` to when it is constructed (for the test showing fix 4)."""
    return int(time.time())


def start_seqno_from_nanoseconds(pubsub: Any) -> None:
    """Fix 4: seqnos ``time_ns() + n`` stay unique across restarts unless a node publishes over 10**9 msgs/s."""
    pubsub.counter = max(int(getattr(pubsub, "counter", 0)), time.time_ns())


async def _negotiate_tolerating_removed_handlers(self: Multiselect, *args: Any, **kwargs: Any) -> Any:
    """Fix 5: a handler removed while its protocol was being negotiated fails the stream, not the node."""
    try:
        return await STOCK_NEGOTIATE(self, *args, **kwargs)
    except KeyError as exc:
        raise MultiselectError(f"protocol {exc} was removed while it was being negotiated") from None


def apply_negotiate_fix() -> None:
    Multiselect.negotiate = _negotiate_tolerating_removed_handlers  # type: ignore[method-assign]


def undo_negotiate_fix() -> None:
    Multiselect.negotiate = STOCK_NEGOTIATE  # type: ignore[method-assign]


def apply_dial_fix() -> None:
    _swarm._HAPPY_EYEBALLS_DELAY = 0.0


def undo_dial_fix() -> None:
    _swarm._HAPPY_EYEBALLS_DELAY = STOCK_HAPPY_EYEBALLS_DELAY


def apply_muxer_fix() -> None:
    MuxerMultistream.new_conn = _new_conn_with_registered_class  # type: ignore[method-assign]


def undo_muxer_fix() -> None:
    MuxerMultistream.new_conn = STOCK_MUXER_NEW_CONN  # type: ignore[method-assign]


def apply_task_parent_fix() -> None:
    FunctionTask.trio_task = _INDEXED_TRIO_TASK_PROPERTY  # type: ignore[method-assign,assignment]
    TrioManager._find_parent_task = _find_parent_task_indexed  # type: ignore[method-assign]


def undo_task_parent_fix() -> None:
    FunctionTask.trio_task = STOCK_TRIO_TASK_PROPERTY  # type: ignore[method-assign]
    TrioManager._find_parent_task = STOCK_FIND_PARENT_TASK  # type: ignore[method-assign]


def apply() -> None:
    apply_dial_fix()
    apply_muxer_fix()
    apply_task_parent_fix()
    apply_negotiate_fix()


def undo() -> None:
    """For the tests that demonstrate the bugs."""
    undo_dial_fix()
    undo_muxer_fix()
    undo_task_parent_fix()
    undo_negotiate_fix()


apply()
