"""A pubsub stream to a new peer that failed to negotiate is retried, as one that failed to open is.

When a peer connects, ``Pubsub._handle_new_peer_with_retry`` opens our pubsub stream to it (without that stream the
peer never gets our subscriptions nor any message from us) and retries, while the peer stays connected, only on
``SwarmException`` and ``StreamClosed``. ``BasicHost.new_stream`` reports a failed protocol negotiation as
``StreamFailure`` (a ``HostException``): a multistream-select that timed out on a loaded peer, or a peer whose
pubsub handler was not registered yet when the connection came up. That is taken as "non-retryable" and the peer
is never registered: a one-way link for as long as the connection lives. In a 100-node join storm, workers whose
only link was such a connection to a loaded bootstrap heard nothing for three minutes (no topic peer, so no
advertisement), while the bootstrap queued messages for them ("Cannot flush pending messages ...: no stream
available").

:func:`retry_negotiation_failures` wraps one Pubsub's ``_handle_new_peer`` so that these failures reach the retry
loop as ``SwarmException`` (its capped backoff, 0.5 s doubling to 10 s, while the peer is connected); anything else
passes unchanged. Per-instance; returns its undo.

Upstream: ``libp2p/pubsub/pubsub.py``, ``Pubsub._handle_new_peer_with_retry`` (py-libp2p 0.8.1). Shown by
``tests/stack/patches/test_pubsub_stream_retry.py``.
"""

from __future__ import annotations

from typing import Any, Callable

from libp2p.host.exceptions import HostException
from libp2p.network.exceptions import SwarmException
from libp2p.protocol_muxer.exceptions import MultiselectClientError

RETRYABLE = (HostException, MultiselectClientError)


class NegotiationFailed(SwarmException):
    """A pubsub stream whose protocol negotiation failed: retried like a stream that did not open."""


def retry_negotiation_failures(pubsub: Any) -> Callable[[], None]:
    stock = pubsub._handle_new_peer

    async def handle_new_peer(peer_id: Any) -> None:
        try:
            await stock(peer_id)
        except RETRYABLE as exc:
            raise NegotiationFailed(f"pubsub stream to {peer_id} not negotiated: {exc}") from exc

    pubsub._handle_new_peer = handle_new_peer

    def undo() -> None:
        if pubsub.__dict__.get("_handle_new_peer") is handle_new_peer:
            del pubsub._handle_new_peer

    return undo
