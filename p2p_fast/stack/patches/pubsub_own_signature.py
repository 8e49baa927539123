"""Pubsub hook 4 of ``pubsub_tuning``: a publisher does not verify the signature it just made.

With strict signing, ``Pubsub.publish`` signs a message and then ``push_msg`` verifies that same signature
(~0.2 ms). :func:`record_own_signatures` wraps a Pubsub's signing key so it remembers the last payload it signed and
its signature; :func:`is_fresh_own_signature` answers True once, for the message whose signature is that signature
over that exact payload and whose key is ours: ``publish`` calls ``push_msg`` right after signing, with no await in
between, so that check is the publisher's own. Every other check (all messages from others, and any later check of
ours) verifies as before; strict signing stays on.

Per-instance: :func:`record_own_signatures` returns its undo (the stock key back, the signer forgotten). The check
is asked by the signature validator of ``pubsub_signer_keys`` (hook 5), the one place py-libp2p lets us in:
without that patch applied nothing consults it.

Upstream: ``libp2p/pubsub/pubsub.py``, ``Pubsub.publish`` -> ``push_msg`` -> ``signature_validator``
(py-libp2p 0.8.1) -- a limit, not a bug (bench/RESULTS.md); no upstream issue was found. Shown by
``tests/stack/patches/test_pubsub_own_signature.py``.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

_SIGNING_PREFIX = PUBSUB_SIGNING_PREFIX.encode()


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


# our peer id bytes -> the signer of the pubsub that publishes as that peer
_SIGNERS: "weakref.WeakValueDictionary[bytes, _RecordingSigner]" = weakref.WeakValueDictionary()


def is_fresh_own_signature(msg: Any) -> bool:
    """True once for the message a recording pubsub just signed (module doc); False for every other message."""
    signer = _SIGNERS.get(msg.from_id)
    if signer is not None and signer.last_signature and msg.signature == signer.last_signature \
            and msg.key == signer.public_key_bytes:
        unsigned = rpc_pb2.Message(data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id, seqno=msg.seqno)
        if _SIGNING_PREFIX + unsigned.SerializeToString() == signer.last_payload:
            signer.last_signature = b""  # once: the publish that made it; any later check verifies
            return True
    return False


def record_own_signatures(pubsub: Any) -> Callable[[], None]:
    """Wrap ``pubsub``'s signing key (strict signing only) so its own fresh signatures are not re-verified.
    Returns the undo. Nothing happens (and the undo does nothing) without strict signing or a key."""
    key = pubsub.sign_key
    if not pubsub.strict_signing or key is None or isinstance(key, _RecordingSigner):
        return lambda: None
    signer = _RecordingSigner(key, pubsub.host.get_public_key().serialize())
    pubsub.sign_key = signer
    own_id = pubsub.my_id.to_bytes()
    _SIGNERS[own_id] = signer

    def undo() -> None:
        if pubsub.sign_key is signer:
            pubsub.sign_key = key
        if _SIGNERS.get(own_id) is signer:
            del _SIGNERS[own_id]

    return undo
