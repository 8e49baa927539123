"""Pubsub hook 3 of ``pubsub_tuning``: a peer's signed record verified once per record, not once per RPC.

Every incoming RPC's ``senderRecord`` is decoded, its Ed25519 signature verified and the peer's addresses
re-stored (``maybe_consume_signed_record``, ~0.33 ms). For a host registered with :func:`cache_peer_records` we
remember the exact record bytes we accepted from each peer; the same bytes from the same peer are not verified again
while the peerstore still holds the record we stored (re-verified every ``RECORD_REVERIFY_S`` seconds to refresh its
address TTL). Different bytes, a different peer or an evicted record: the stock path runs.

Process-wide part: :func:`apply` / :func:`revert` replace ``maybe_consume_signed_record`` where the pubsub modules
imported it by name with :func:`cached_maybe_consume_signed_record`, which calls the stock function for every host
not registered. Per-instance part: :func:`cache_peer_records` (``tune_pubsub`` calls it).

Upstream: ``libp2p/pubsub/pubsub.py``, ``maybe_consume_signed_record`` per incoming RPC (py-libp2p 0.8.1) -- a
limit, not a bug (bench/RESULTS.md); no upstream issue was found. Shown by
``tests/stack/patches/test_pubsub_peer_records.py``.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from typing import Any

import libp2p.pubsub.floodsub as _floodsub_mod
import libp2p.pubsub.gossipsub as _gossipsub_mod
import libp2p.pubsub.pubsub as _pubsub_mod

from p2p_fast.stack.patches._attrs import AttributePatch, Replacement

RECORD_REVERIFY_S = 600.0
MAX_RECORDS_PER_HOST = 4096

# The stock function, captured before any patching (the pubsub modules imported it by name).
STOCK_CONSUME_RECORD = _pubsub_mod.maybe_consume_signed_record

# host -> {peer id: (record bytes, peerstore state object, verified at)}
_PEER_RECORDS: "weakref.WeakKeyDictionary[Any, OrderedDict[Any, tuple[bytes, Any, float]]]" = (
    weakref.WeakKeyDictionary())


def cached_maybe_consume_signed_record(msg: Any, host: Any, peer_id: Any = None) -> bool:
    """``maybe_consume_signed_record`` for registered hosts: a peer's record bytes are verified once (module
    doc)."""
    records = _PEER_RECORDS.get(host)
    if records is None or peer_id is None or not msg.HasField("senderRecord"):
        return STOCK_CONSUME_RECORD(msg, host, peer_id)
    record = msg.senderRecord
    state_map = getattr(host.get_peerstore(), "peer_record_map", None)
    if state_map is None:
        return STOCK_CONSUME_RECORD(msg, host, peer_id)
    hit = records.get(peer_id)
    now = time.monotonic()
    if (hit is not None and hit[0] == record and state_map.get(peer_id) is hit[1]
            and now - hit[2] < RECORD_REVERIFY_S):
        return True
    ok = STOCK_CONSUME_RECORD(msg, host, peer_id)
    if ok:
        state = state_map.get(peer_id)
        if state is not None:
            records[peer_id] = (record, state, now)
            records.move_to_end(peer_id)
            while len(records) > MAX_RECORDS_PER_HOST:
                records.popitem(last=False)
    else:
        records.pop(peer_id, None)
    return ok


def cache_peer_records(host: Any) -> None:
    """Verify each peer's record bytes once for ``host`` (the process-wide part must be applied)."""
    _PEER_RECORDS.setdefault(host, OrderedDict())


def _replacements() -> list[Replacement]:
    return [Replacement(mod, "maybe_consume_signed_record", cached_maybe_consume_signed_record)
            for mod in (_pubsub_mod, _gossipsub_mod, _floodsub_mod) if "maybe_consume_signed_record" in vars(mod)]


PATCH = AttributePatch(*_replacements())

apply = PATCH.apply
revert = PATCH.revert
