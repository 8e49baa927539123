"""Pubsub hook 2 of ``pubsub_tuning``: our signed peer record, built once instead of for every outgoing RPC.

py-libp2p attaches our signed peer record (``senderRecord``) to every outgoing RPC via ``env_to_send_in_RPC``,
which lists our addresses (multiaddr parsing), compares them with the record's and re-serialises the envelope each
time (~0.5 ms a message). For a host registered with :func:`cache_local_record` we keep the envelope bytes and look
at our addresses again at most every ``ADDRS_RECHECK_S`` seconds (go-libp2p re-checks its addresses every 5 s);
when they changed, the stock function issues a new record. :func:`expire_local_record` makes the next RPC re-check
at once (after a relay reservation changed our addresses).

Process-wide part: :func:`apply` / :func:`revert` replace ``env_to_send_in_RPC`` where the pubsub modules imported
it by name (``pubsub.py``, ``gossipsub.py``, ``floodsub.py``) with :func:`cached_env_to_send_in_RPC`, which calls
the stock function for every host not registered. Per-instance part: :func:`cache_local_record` (``tune_pubsub``
calls it for the Pubsub we build).

Upstream: ``libp2p/pubsub/pubsub.py`` / ``libp2p/peer/peerstore.py``, ``env_to_send_in_RPC`` per outgoing RPC
(py-libp2p 0.8.1) -- a limit, not a bug (bench/RESULTS.md); no upstream issue was found. Shown by
``tests/stack/patches/test_pubsub_local_record.py``.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import libp2p.pubsub.floodsub as _floodsub_mod
import libp2p.pubsub.gossipsub as _gossipsub_mod
import libp2p.pubsub.pubsub as _pubsub_mod

from p2p_fast.stack.patches._attrs import AttributePatch, Replacement

ADDRS_RECHECK_S = 1.0

# The stock function, captured before any patching (the pubsub modules imported it by name).
STOCK_ENV_TO_SEND = _pubsub_mod.env_to_send_in_RPC


class _LocalRecord:
    __slots__ = ("envelope", "addrs", "checked_at")

    def __init__(self) -> None:
        self.envelope: bytes | None = None
        self.addrs: frozenset[bytes] = frozenset()
        self.checked_at = 0.0


# host -> our cached signed record
_LOCAL_RECORDS: "weakref.WeakKeyDictionary[Any, _LocalRecord]" = weakref.WeakKeyDictionary()


def cached_env_to_send_in_RPC(host: Any) -> tuple[bytes, bool]:
    """``env_to_send_in_RPC`` for registered hosts: the cached envelope, addresses re-checked every
    ADDRS_RECHECK_S."""
    state = _LOCAL_RECORDS.get(host)
    if state is None:
        return STOCK_ENV_TO_SEND(host)
    now = time.monotonic()
    if state.envelope is not None and now - state.checked_at < ADDRS_RECHECK_S:
        return state.envelope, False
    addrs = frozenset(a.to_bytes() for a in host.get_addrs())
    state.checked_at = now
    if state.envelope is not None and addrs == state.addrs:
        return state.envelope, False
    envelope, created = STOCK_ENV_TO_SEND(host)  # issues and stores a new record when the addresses changed
    state.envelope = envelope
    state.addrs = addrs
    return envelope, created


def expire_local_record(host: Any) -> None:
    """Make a registered host's next RPC re-check our addresses (and so carry a new signed record at once when
    they changed) instead of reusing the cached envelope for up to ``ADDRS_RECHECK_S``."""
    state = _LOCAL_RECORDS.get(host)
    if state is not None:
        state.checked_at = float("-inf")


def cache_local_record(host: Any) -> None:
    """Cache ``host``'s signed record for its outgoing RPCs (the process-wide part must be applied)."""
    _LOCAL_RECORDS.setdefault(host, _LocalRecord())


def _replacements() -> list[Replacement]:
    return [Replacement(mod, "env_to_send_in_RPC", cached_env_to_send_in_RPC)
            for mod in (_pubsub_mod, _gossipsub_mod, _floodsub_mod) if "env_to_send_in_RPC" in vars(mod)]


PATCH = AttributePatch(*_replacements())

apply = PATCH.apply
revert = PATCH.revert
