"""Hooks that put our hot paths into py-libp2p's Pubsub, and take per-message work off it that a profile showed.

Two parts. The process-wide one, :func:`apply` / :func:`revert` (registered in :mod:`p2p_fast.stack.patches`,
applied when the host is built): the module-level functions of ``libp2p/pubsub/pubsub.py``, ``gossipsub.py`` and
``floodsub.py`` named below are replaced by versions that look the host or sender up in a registry of tuned pubsubs
and call the stock function for everybody else. The exceptions are signature checking (5), which cannot tell who
asks: every Pubsub in the process verifies with ``verify_signature`` (the same rules, except that a malformed
``msg.key`` rejects the message where stock raises out of ``push_msg``), and the subscription buffer size (7).
The per-instance one, ``tune_pubsub`` (``constructor_kwargs`` and ``after_construct``), fills that registry for
the Pubsub we build (``p2p_fast.stack.pubsub``); it refuses to run before :func:`apply`.

Upstream: these are limits of py-libp2p 0.8.1 (per-message work measured in bench/RESULTS.md), not bugs; no
upstream issue was found for any of them. Shown by ``tests/stack/patches/test_pubsub_tuning.py`` (each hook's work
and answers against stock, and the subscription buffer with the patch reverted).

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
5. **Signers' keys decoded once**: stock ``signature_validator`` decodes the signer's public key from its peer id
   (multihash, protobuf) and checks that it matches, for every message. ``verify_signature`` applies the same
   rules (key inlined in the peer id, else ``msg.key`` whose peer id must be the sender's; the payload is
   ``"libp2p-pubsub:"`` + the message without key and signature) and keeps the decoded key per sender; the
   Ed25519 check itself runs for every message.
6. **Queued publishes leave in one RPC**: the per-peer sending task writes one RPC per queued item (stock
   ``handle_sending_messages``). Ours takes whatever is already queued when it wakes and merges consecutive
   publish-only RPCs into one (messages in order, one sender record, at most ``MERGE_MAX_MESSAGES`` messages and
   ``MERGE_LIMIT`` bytes, never more than this node's own inbound RPC limit); an RPC with subscriptions or control
   goes out on its own, in order.
   One RPC with several messages is plain pubsub (go-libp2p sends and accepts them); it saves the receiver a
   read, a parse, a record check and a metrics event per message, and both sides a Yamux frame, a Noise message
   and a syscall. Nothing waits to be merged: a message alone in the queue goes out alone.
7. **A subscription buffer for bursts**: py-libp2p hands a received RPC's messages to the topic's subscription
   buffer (``SUBSCRIPTION_CHANNEL_SIZE``, 32 messages) before the subscriber's reader task can run, and drops
   what does not fit ("fail to deliver message to subscription"). A few RPCs of merged messages (ours, or go's)
   arriving together overflow it although the reader keeps up on average: one 64 KiB read of small messages hands
   over ~200 at once, and several reads can pass before the reader's turn (128 lost ~1000 of 8000 messages in a
   2 s flood at ~3500 msg/s, ``tests/perf/test_gossip_flood.py``). We make it ``SUBSCRIPTION_BUFFER`` messages, as
   many as can be in the hands of push tasks at once (``pubsub_tasks.MAX_IN_FLIGHT``): what those tasks deliver
   fits unless the reader is behind on average, and then GossipSub's answer (drop for a slow subscriber, as
   go-libp2p does) is the right one. The messages are in memory either way (in the tasks or in the buffer). The
   size is a module constant read by ``Pubsub.subscribe``, so this one applies to every Pubsub of a process that
   tunes one (they only drop less).
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from typing import Any, Callable

import libp2p.pubsub.floodsub as _floodsub_mod
import libp2p.pubsub.gossipsub as _gossipsub_mod
import libp2p.pubsub.pubsub as _pubsub_mod
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from p2p_fast._ext import SeenCache, ValidationCache, message_id
from p2p_fast.stack.patches._attrs import AttributePatch, Replacement
from p2p_fast.stack.patches.pubsub_tasks import MAX_IN_FLIGHT

ADDRS_RECHECK_S = 1.0
RECORD_REVERIFY_S = 600.0
MAX_RECORDS_PER_HOST = 4096
MAX_CACHED_KEYS = 4096
MERGE_LIMIT = 64 * 1024
# A receiver's py-libp2p delivers a whole RPC's messages to its subscription buffer (32 messages) before its
# reader task runs: half of it leaves room for what is already buffered.
MERGE_MAX_MESSAGES = 16
SUBSCRIPTION_BUFFER = MAX_IN_FLIGHT
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


def expire_local_record(host: Any) -> None:
    """Make a tuned host's next RPC re-check our addresses (and so carry a new signed record at once when they
    changed) instead of reusing the cached envelope for up to ``ADDRS_RECHECK_S``."""
    state = _LOCAL_RECORDS.get(host)
    if state is not None:
        state.checked_at = float("-inf")


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
    return VERIFY(msg)


# sender id bytes (or (id, key bytes) when the key is not inlined in the id) -> decoded public key
_SIGNER_KEYS: "OrderedDict[Any, Any]" = OrderedDict()


def signer_key(msg: Any) -> Any:
    """The public key that must have signed ``msg``, or None if the message cannot name a valid one."""
    from_id = msg.from_id
    key = _SIGNER_KEYS.get(from_id)
    if key is not None:
        return key
    cache_key: Any = from_id
    sender = ID(from_id)
    key = sender.extract_public_key()  # None unless inlined (identity multihash), as for Ed25519
    if key is None:
        if not msg.key:
            return None
        cache_key = (from_id, msg.key)
        key = _SIGNER_KEYS.get(cache_key)
        if key is not None:
            return key
        try:
            key = deserialize_public_key(msg.key)
        except Exception:
            return None
    if ID.from_pubkey(key) != sender:
        return None
    _SIGNER_KEYS[cache_key] = key
    if len(_SIGNER_KEYS) > MAX_CACHED_KEYS:
        _SIGNER_KEYS.popitem(last=False)
    return key


def verify_signature(msg: Any) -> bool:
    """``signature_validator``'s rules with the signer's key decoded once per sender (module doc, 5)."""
    if not msg.signature:
        return False
    key = signer_key(msg)
    if key is None:
        return False
    unsigned = rpc_pb2.Message(data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id, seqno=msg.seqno)
    try:
        return bool(key.verify(_SIGNING_PREFIX + unsigned.SerializeToString(), msg.signature))
    except Exception:
        return False


# What skip_own_signature_validator falls back to (a module attribute so tests can count the calls).
VERIFY = verify_signature


def _publish_only(rpc: Any) -> bool:
    return not rpc.subscriptions and not rpc.HasField("control")


async def batched_sending(pubsub: Any, peer_id: Any, stream: Any, queue: Any) -> None:
    """``Pubsub.handle_sending_messages`` that merges the publish-only RPCs already queued (module doc, 6)."""
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


def _module_hooks() -> list[Replacement]:
    out = []
    for mod in (_pubsub_mod, _gossipsub_mod, _floodsub_mod):
        if "env_to_send_in_RPC" in vars(mod):
            out.append(Replacement(mod, "env_to_send_in_RPC", cached_env_to_send_in_RPC))
        if "maybe_consume_signed_record" in vars(mod):
            out.append(Replacement(mod, "maybe_consume_signed_record", cached_maybe_consume_signed_record))
    out.append(Replacement(_pubsub_mod, "signature_validator", skip_own_signature_validator))
    out.append(Replacement(_pubsub_mod, "SUBSCRIPTION_CHANNEL_SIZE",
                           max(_pubsub_mod.SUBSCRIPTION_CHANNEL_SIZE, SUBSCRIPTION_BUFFER)))
    return out


PATCH = AttributePatch(*_module_hooks())

apply = PATCH.apply
revert = PATCH.revert


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
        """Hooks 2-7 of the module doc for this pubsub and its host (the module-level part must be applied)."""
        if not PATCH.is_applied():
            raise RuntimeError("pubsub tuning needs py-libp2p's pubsub module hooks: call "
                               "p2p_fast.stack.patches.apply_all() first (p2p_fast.stack.host.build_host does)")
        pubsub.handle_sending_messages = lambda peer_id, stream, queue: batched_sending(pubsub, peer_id, stream,
                                                                                       queue)
        host = pubsub.host
        _LOCAL_RECORDS.setdefault(host, _LocalRecord())
        _PEER_RECORDS.setdefault(host, OrderedDict())
        if pubsub.strict_signing and pubsub.sign_key is not None and not isinstance(pubsub.sign_key, _RecordingSigner):
            signer = _RecordingSigner(pubsub.sign_key, host.get_public_key().serialize())
            pubsub.sign_key = signer
            _SIGNERS[pubsub.my_id.to_bytes()] = signer


tune_pubsub = _Tuning()
