"""Telling a PSK mismatch apart when an outbound connection fails its security handshake.

In a private network every connection is wrapped in the PSK's stream cipher before anything else is said. A peer
with another key (or none) therefore reads noise where the multistream header should be. What the dialer then sees
depends on that noise: "failed to negotiate the secure protocol" at once, or nothing at all until a timeout (the
noise announced a long message). On a node that has a PSK both are what a key mismatch looks like, so we say so:
``p2p_handshake_failures_total{reason="psk-mismatch"}`` for the first, ``reason="handshake-timeout"`` for the second
(a private node gives the upgrade ``HANDSHAKE_SHARE`` of the connection timeout, so that it is the handshake that
times out, not the whole dial), each with a warning naming the peer and the fix (once a minute per peer). A public
node's negotiation failures are counted as ``negotiation``.

Two dial paths lead here: the swarm's (``host.connect``: the per-instance patch
:func:`p2p_fast.stack.patches.outbound_handshake_watch.watch_outbound_handshakes` wraps ``upgrade_outbound_raw_conn``
of our host's network and calls :func:`classify` and :func:`report`) and the bootstrap's probe of an address
without a peer ID (:func:`note_probe_failure`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from p2p_fast.stack.security import metrics

log = logging.getLogger(__name__)
PSK_MISMATCH = "psk-mismatch"
NEGOTIATION = "negotiation"
HANDSHAKE_TIMEOUT = "handshake-timeout"
HANDSHAKE_SHARE = 0.6
PSK_HINT = ("this node is in a private network (PSK) and the peer has no key or another one: both need the same "
            "network.psk_file (or P2P_PSK)")
WARN_EVERY_S = 60.0
_NEGOTIATION_MARKERS = ("failed to negotiate the secure protocol", "failed to negotiate a security protocol")
_last_warned: dict[str, float] = {}


def classify(exc: BaseException, private: bool) -> str | None:
    """``psk-mismatch`` / ``negotiation`` when ``exc`` (or what caused it) is a failed security negotiation."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        text = f"{type(e).__name__}: {e}".lower()
        if any(m in text for m in _NEGOTIATION_MARKERS):
            return PSK_MISMATCH if private else NEGOTIATION
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def report(reason: str, who: str, exc: BaseException) -> None:
    metrics.HANDSHAKE_FAILURES.labels(reason).inc()
    now = time.monotonic()
    if now - _last_warned.get(who, -WARN_EVERY_S) < WARN_EVERY_S:
        return
    _last_warned[who] = now
    if len(_last_warned) > 1024:
        _last_warned.clear()
    if reason == PSK_MISMATCH:
        log.warning("cannot connect to %s: the security handshake failed (%s); %s", who, exc, PSK_HINT)
    elif reason == HANDSHAKE_TIMEOUT:
        log.warning("cannot connect to %s: %s; if it is up, %s", who, exc, PSK_HINT)
    else:
        log.info("cannot connect to %s: the security handshake failed (%s)", who, exc)


def note_dial_timeout(host: Any, addr: Any, seconds: float) -> None:
    """A bootstrap dial of ``addr`` timed out: in a private network, say what that may mean."""
    if getattr(host.get_network(), "psk", None) is not None:
        report(HANDSHAKE_TIMEOUT, str(addr), TimeoutError(f"no connection within {seconds:g} s"))


def note_probe_failure(host: Any, addr: Any, exc: BaseException) -> None:
    """The bootstrap's probe of ``addr`` failed with ``exc``: report it if it was a failed negotiation."""
    private = getattr(host.get_network(), "psk", None) is not None
    reason = classify(exc, private)
    if reason is not None:
        report(reason, str(addr), exc)
