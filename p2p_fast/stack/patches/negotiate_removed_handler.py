"""A stream handler removed while its protocol is being negotiated fails that stream, not the node.

Upstream: ``libp2p/protocol_muxer/multiselect.py``, ``Multiselect.negotiate`` (py-libp2p 0.8.1) checks that a
protocol has a handler, awaits the write of its answer, and then reads ``self.handlers[protocol]``. A handler
removed during that await (the DHT switching to client mode when AutoNAT finds the node private removes
``/ipfs/kad/1.0.0``) raises ``KeyError``, which is not a ``MultiselectError``: it escapes the swarm's stream task
and stops the whole node (seen: 6 of 21 nodes of a join storm on a loaded machine). Related upstream report:
py-libp2p issue #417 ("Failure to negotiate a peer should not take down the listener", open).

The patch turns that ``KeyError`` into the ``MultiselectError`` a missing protocol gets, so only that stream fails.
Shown by ``tests/stack/patches/test_negotiate_removed_handler.py``.
"""

from __future__ import annotations

from typing import Any

from libp2p.protocol_muxer.exceptions import MultiselectError
from libp2p.protocol_muxer.multiselect import Multiselect

from p2p_fast.stack.patches._attrs import AttributePatch, Replacement

STOCK_NEGOTIATE = vars(Multiselect)["negotiate"]


async def negotiate_tolerating_removed_handlers(self: Multiselect, *args: Any, **kwargs: Any) -> Any:
    try:
        return await STOCK_NEGOTIATE(self, *args, **kwargs)
    except KeyError as exc:
        raise MultiselectError(f"protocol {exc} was removed while it was being negotiated") from None


PATCH = AttributePatch(Replacement(Multiselect, "negotiate", negotiate_tolerating_removed_handlers))

apply = PATCH.apply
revert = PATCH.revert
