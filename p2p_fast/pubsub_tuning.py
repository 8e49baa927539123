"""Hooks that put our hot paths into py-libp2p's Pubsub, and take per-message work off it that a profile showed.

Every hook applies to the Pubsub instances we tune (``tune_pubsub.after_construct``) and to nothing else: the
module-level functions we replace in ``libp2p.pubsub`` look the host or sender up in a registry of tuned pubsubs and
call the stock function for everybody else, so a stock Pubsub in the same process behaves exactly as before.

1. **Message id and caches**: the message-id function is a constructor argument (XXH64, compiled); the seen cache
   has no hook, so we replace ``pubsub.seen_messages`` (and its O(n) ``validation_cache``) right after
   construction and stop the ones it built (the old seen cache owns a sweeper thread). py-libp2p asks for a
   message's id four or five times on its way through (seen check, validation cache, mark seen, router, mcache);
   ``_MemoMessageId`` computes it once per message object.
2. **Our signed peer record, built once**: py-libp2p attaches our signed peer record (``senderRecord``) to every
   outgoing RPC via ``env_to_send_in_RPC``, which lists our addresses (multiaddr parsing), compares them with the
   record's and re-serialises the envelope each time (~0.5 ms a message). We keep the envelope bytes and look at
   our addresses again at most every ``ADDRS_RECHECK_S`` seconds (go-libp2p re-checks its addresses every 5 s);
   when they changed, the stock function issues a new record.
3. **Peers' signed records, verified once**: every incoming RPC's ``senderRecord`` is decoded, its Ed25519
   signature verified and the peer's addresses re-stored (``maybe_consume_signed_record``, ~0.33 ms). We remember
   the exact record bytes we accepted from each peer; the same bytes from the same peer are not verified again
   while the peerstore still holds the record we stored (re-verified every ``RECORD_REVERIFY_S`` seconds to
   refresh its address TTL). Different bytes, a different peer or an evicted record: the stock path runs.
4. **Not verifying our own signatures**: with strict signing, ``Pubsub.publish`` signs a message and then
   ``push_msg`` verifies that same signature (~0.2 ms). We wrap the signing key to remember the last payload it
   signed and its signature; the validator skips the Ed25519 check once, for the message whose signature is that
   signature over that exact payload and whose key is ours: ``publish`` calls ``push_msg`` right after signing,
   with no await in between, so that check is the publisher's own. Every other check (all messages from others,
   and any later check of ours) verifies as before; strict signing stays on.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from typing import Any, Callable

import libp2p.pubsub.floodsub as _floodsub_mod
import libp2p.pubsub.gossipsub as _gossipsub_mod
import libp2p.pubsub.pubsub as _pubsub_mod
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from ._ext import SeenCache, ValidationCache, message_id

ADDRS_RECHECK_S = 1.0
RECORD_REVERIFY_S = 600.0
MAX_RECORDS_PER_HOST = 4096
_SIGNING_PREFIX = PUBSUB_SIGNING_PREFIX.encode()

# The stock functions, captured before any patching (the pubsub modules imported them by name).
STOCK_ENV_TO_SEND = _pubsub_mod.env_to_send_in_RPC
STOCK_CONSUME_RECORD = _pubsub_mod.maybe_consume_signed_record
STOCK_SIGNATURE_VALIDATOR = _pubsub_mod.signature_validator


class _MemoMessageId:
    """``message_id`` computed once per message object: the last message asked about and its id.

    pubsub asks for the id of the same message object several times in a row and never mutates a message after it
    is signed (the id covers ``from``, ``seqno`` and ``data``). Holding a reference to the last message keeps its
    identity from being reused by another object."""

    __slots__ = ("fn", "last_msg", "last_id")

    def __init__(self, fn: Callable[[Any], bytes]) -> None:
        self.fn = fn
        self.last_msg: Any = None
        self.last_id = b""

    def __call__(self, msg: Any) -> bytes:
        if msg is self.last_msg:
            return self.last_id
        mid = self.fn(msg)
        self.last_msg = msg
        self.last_id = mid
        return mid


class _LocalRecord:
    __slots__ = ("envelope", "addrs", "checked_at")

    def __init__(self) -> None:
        self.envelope: bytes | None = None
        self.addrs: frozenset[bytes] = frozenset()
        self.checked_at = 0.0


class _RecordingSigner:
    """The pubsub's private key, remembering the last payload it signed and the signature it made."""

    def __init__(self, key: Any, public_key_bytes: bytes) -> None:
        self._key = key
        self.public_key_bytes = public_key_bytes
        self.last_payload = b""
        self.last_signature = b""

    def sign(self, data: bytes) -> bytes:
        signature = self._key.sign(data)
        self.last_payload = data
        self.last_signature = signature
        return signature

    def __getattr__(self, name: str) -> Any:  # everything else is the real key
        return getattr(self._key, name)


# host -> our cached signed record; host -> {peer id: (record bytes, peerstore state object, verified at)}
_LOCAL_RECORDS: "weakref.WeakKeyDictionary[Any, _LocalRecord]" = weakref.WeakKeyDictionary()
_PEER_RECORDS: "weakref.WeakKeyDictionary[Any, OrderedDict[Any, tuple[bytes, Any, float]]]" = (
    weakref.WeakKeyDictionary())
# our peer id bytes -> the signer of the tuned pubsub that publishes as that peer
_SIGNERS: "weakref.WeakValueDictionary[bytes, _RecordingSigner]" = weakref.WeakValueDictionary()


def cached_env_to_send_in_RPC(host: Any) -> tuple[bytes, bool]:
    """``env_to_send_in_RPC`` for tuned hosts: the cached envelope, addresses re-checked every ADDRS_RECHECK_S."""
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


def cached_maybe_consume_signed_record(msg: Any, host: Any, peer_id: Any = None) -> bool:
    """``maybe_consume_signed_record`` for tuned hosts: a peer's record bytes are verified once (see module doc)."""
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


def skip_own_signature_validator(msg: Any) -> bool:
    """``signature_validator`` that does not re-verify the signature a tuned pubsub just made (see module doc)."""
    signer = _SIGNERS.get(msg.from_id)
    if signer is not None and signer.last_signature and msg.signature == signer.last_signature \
            and msg.key == signer.public_key_bytes:
        unsigned = rpc_pb2.Message(data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id, seqno=msg.seqno)
        if _SIGNING_PREFIX + unsigned.SerializeToString() == signer.last_payload:
            signer.last_signature = b""  # once: the publish that made it; any later check verifies
            return True
    return STOCK_SIGNATURE_VALIDATOR(msg)


def _install_module_hooks() -> None:
    """Point the pubsub modules' imported names at our registry-gated versions (idempotent)."""
    for mod in (_pubsub_mod, _gossipsub_mod, _floodsub_mod):
        if hasattr(mod, "env_to_send_in_RPC"):
            mod.env_to_send_in_RPC = cached_env_to_send_in_RPC
        if hasattr(mod, "maybe_consume_signed_record"):
            mod.maybe_consume_signed_record = cached_maybe_consume_signed_record
    _pubsub_mod.signature_validator = skip_own_signature_validator


class _Tuning:
    def constructor_kwargs(self) -> dict[str, Any]:
        """The message id is part of our wire protocol: every node of a network must use the same function
        (XXH64 over from, seqno and data; see docs/protocol.md). Peers that use another one still receive full
        messages through the mesh, but cannot match our IHAVE/IWANT ids."""
        return {"msg_id_constructor": _MemoMessageId(message_id)}

    def after_construct(self, pubsub: Any, seen_ttl: float) -> None:
        old = pubsub.seen_messages
        pubsub.seen_messages = SeenCache(seen_ttl)
        stop = getattr(old, "stop", None)
        if stop is not None:
            stop()
        vc = pubsub.validation_cache
        pubsub.validation_cache = ValidationCache(getattr(vc, "ttl", 300), getattr(vc, "max_size", 1000))
        self.tune_records(pubsub)

    def tune_records(self, pubsub: Any) -> None:
        """Hooks 2-4 of the module doc for this pubsub's host."""
        _install_module_hooks()
        host = pubsub.host
        _LOCAL_RECORDS.setdefault(host, _LocalRecord())
        _PEER_RECORDS.setdefault(host, OrderedDict())
        if pubsub.strict_signing and pubsub.sign_key is not None and not isinstance(pubsub.sign_key, _RecordingSigner):
            signer = _RecordingSigner(pubsub.sign_key, host.get_public_key().serialize())
            pubsub.sign_key = signer
            _SIGNERS[pubsub.my_id.to_bytes()] = signer


tune_pubsub = _Tuning()
