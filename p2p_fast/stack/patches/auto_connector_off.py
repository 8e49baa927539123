"""py-libp2p's auto-dialer is switched off on our host (a per-instance patch: :func:`disable_auto_dials` takes the
host and returns its undo).

Upstream: ``libp2p/network/auto_connector.py``, ``AutoConnector.maybe_connect`` (py-libp2p 0.8.1) dials every peer
in the peerstore -- everyone Identify, gossip or the DHT ever named -- up to the midpoint of the swarm's
watermarks, and ``new_host`` offers no setting to turn it off. It rebuilt a full mesh behind our connection
manager's back (``p2p_fast.stack.connmgr``); our connector (``p2p_fast.protocols.discovery``) does the dialing.
No upstream issue was found.

The patch replaces ``maybe_connect`` on this swarm's auto-connector by a no-op; the undo removes it.
Shown by ``tests/stack/patches/test_auto_connector_off.py``.
"""

from __future__ import annotations

from typing import Any, Callable


async def _no_auto_dials() -> None:
    return None


def disable_auto_dials(host: Any) -> Callable[[], None]:
    """No automatic dials by py-libp2p on ``host`` from now on. Returns the undo (a no-op without an auto-dialer)."""
    auto = getattr(host.get_network(), "auto_connector", None)
    if auto is None:
        return lambda: None
    auto.maybe_connect = _no_auto_dials

    def undo() -> None:
        if auto.__dict__.get("maybe_connect") is _no_auto_dials:
            del auto.maybe_connect

    return undo
