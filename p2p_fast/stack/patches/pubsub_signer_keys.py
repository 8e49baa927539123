"""Pubsub hook 5 of ``pubsub_tuning``: a signer's public key decoded once per sender, not once per message.

Stock ``signature_validator`` decodes the signer's public key from its peer id (multihash, protobuf) and checks that
it matches, for every message. :func:`verify_signature` applies the same rules (key inlined in the peer id, else
``msg.key`` whose peer id must be the sender's; the payload is ``"libp2p-pubsub:"`` + the message without key and
signature) and keeps the decoded key per sender; the Ed25519 check itself runs for every message.

Process-wide, and for every Pubsub of the process: the validator cannot tell which Pubsub asks, so
:func:`apply` points ``libp2p.pubsub.pubsub.signature_validator`` at :func:`validate_signature` for all of them (the
same rules, except that a malformed ``msg.key`` rejects the message where stock raises out of ``push_msg``).
:func:`validate_signature` first asks ``pubsub_own_signature`` (hook 4) whether the message is a recording
Pubsub's own fresh signature, and otherwise calls :data:`VERIFY` (``verify_signature``; the node's
``p2p_fast.stack.pubsub_guard.install`` points it at a check that also counts refusals).

Upstream: ``libp2p/pubsub/pubsub.py`` / ``libp2p/pubsub/validators.py``, ``signature_validator`` (py-libp2p 0.8.1)
-- a limit, not a bug (bench/RESULTS.md); no upstream issue was found. Shown by
``tests/stack/patches/test_pubsub_signer_keys.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import libp2p.pubsub.pubsub as _pubsub_mod
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from p2p_fast.stack.patches._attrs import AttributePatch, Replacement
from p2p_fast.stack.patches.pubsub_own_signature import is_fresh_own_signature

MAX_CACHED_KEYS = 4096
_SIGNING_PREFIX = PUBSUB_SIGNING_PREFIX.encode()

# The stock validator, captured before any patching (pubsub.py imported it by name).
STOCK_SIGNATURE_VALIDATOR = _pubsub_mod.signature_validator

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
    """``signature_validator``'s rules with the signer's key decoded once per sender (module doc)."""
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


# What validate_signature falls back to (a module attribute so the node can count refusals and tests the calls).
VERIFY = verify_signature


def validate_signature(msg: Any) -> bool:
    """The ``signature_validator`` of every Pubsub in the process once applied (module doc)."""
    return is_fresh_own_signature(msg) or VERIFY(msg)


PATCH = AttributePatch(Replacement(_pubsub_mod, "signature_validator", validate_signature))

apply = PATCH.apply
revert = PATCH.revert
