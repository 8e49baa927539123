"""A failed outbound security handshake says why: a PSK mismatch or a handshake timeout (a per-instance patch:
:func:`watch_outbound_handshakes` takes the host and returns its undo).

Upstream: ``libp2p/network/swarm.py``, ``Swarm.upgrade_outbound_raw_conn`` (py-libp2p 0.8.1) -- a limit: in a
private network (PSK) a peer with another key reads noise where the multistream header should be, and the dialer
sees either "failed to negotiate the secure protocol" or nothing until the whole dial times out; neither names the
likely cause, and the swarm offers no hook to observe upgrade failures. (py-libp2p issue #586, closed, was about the
responder side of a failed negotiation.)

The patch wraps ``upgrade_outbound_raw_conn`` on this one swarm: failures are classified and reported by
:mod:`p2p_fast.stack.security.handshake` (``p2p_handshake_failures_total{reason}``, a warning naming the fix), and a
private node gives the upgrade ``HANDSHAKE_SHARE`` of the connection timeout, so that it is the handshake that
times out, not the whole dial. The undo removes the wrapper.
Shown by ``tests/stack/patches/test_outbound_handshake_watch.py``.
"""

from __future__ import annotations

from typing import Any, Callable

import trio
from libp2p.network.exceptions import SwarmException

from p2p_fast.stack.security import handshake


def watch_outbound_handshakes(host: Any, private: bool, connection_timeout: float = 30.0) -> Callable[[], None]:
    """Classify and report failed security upgrades of the swarm's outbound connections (see the module doc).
    Returns the undo."""
    network = host.get_network()
    inner = network.upgrade_outbound_raw_conn
    budget = max(1.0, handshake.HANDSHAKE_SHARE * connection_timeout)

    async def upgrade_outbound_raw_conn(raw_conn: Any, peer_id: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            if not private:
                return await inner(raw_conn, peer_id, *args, **kwargs)
            try:
                with trio.fail_after(budget):
                    return await inner(raw_conn, peer_id, *args, **kwargs)
            except trio.TooSlowError:
                exc = TimeoutError(f"the connection was accepted but its upgrade did not complete in {budget:g} s")
                handshake.report(handshake.HANDSHAKE_TIMEOUT, str(peer_id), exc)
                raise SwarmException(f"upgrade of the connection to {peer_id} timed out") from None
        except Exception as exc:
            reason = handshake.classify(exc, private)
            if reason is not None:
                handshake.report(reason, str(peer_id), exc)
            raise

    network.upgrade_outbound_raw_conn = upgrade_outbound_raw_conn

    def undo() -> None:
        if network.__dict__.get("upgrade_outbound_raw_conn") is upgrade_outbound_raw_conn:
            del network.upgrade_outbound_raw_conn

    return undo
