"""p2p_fast.stack.patches.pubsub_signer_keys: verify_signature gives stock signature_validator's answers, and
decodes a signer's key once per sender where stock decodes it for every message."""

from __future__ import annotations

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.rsa import create_new_key_pair as create_rsa_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

import libp2p.pubsub.pubsub as pubsub_mod
from p2p_fast.stack.patches import pubsub_signer_keys
from p2p_fast.stack.patches.pubsub_signer_keys import STOCK_SIGNATURE_VALIDATOR, verify_signature

TOPIC = "p2p-fast/signer-keys-test"
pytestmark = pytest.mark.usefixtures("libp2p_patched")


def _signed(key_pair, data: bytes, seqno: int, with_key: bool = True) -> rpc_pb2.Message:
    from_id = ID.from_pubkey(key_pair.public_key).to_bytes()
    msg = rpc_pb2.Message(data=data, topicIDs=[TOPIC], from_id=from_id, seqno=seqno.to_bytes(8, "big"))
    msg.signature = key_pair.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    if with_key:
        msg.key = key_pair.public_key.serialize()
    return msg


def test_verify_signature_agrees_with_stock():
    """verify_signature against py-libp2p's signature_validator on good, tampered and mis-keyed messages, with the
    key inlined in the peer id (Ed25519) and sent in msg.key (RSA)."""
    ed, ed2, rsa = create_new_key_pair(), create_new_key_pair(), create_rsa_key_pair(2048)
    cases = []
    for kp in (ed, rsa):
        good = _signed(kp, b"data", 1)
        cases.append(good)
        for field, value in (("data", b"datA"), ("seqno", b"\x00" * 7 + b"\x02"), ("signature", b"\x01" * 64)):
            bad = rpc_pb2.Message()
            bad.CopyFrom(good)
            setattr(bad, field, value)
            cases.append(bad)
        nosig = rpc_pb2.Message()
        nosig.CopyFrom(good)
        nosig.ClearField("signature")
        cases.append(nosig)
    cases.append(_signed(ed, b"no key field", 2, with_key=False))  # Ed25519: the key is in the id
    cases.append(_signed(rsa, b"no key field", 2, with_key=False))  # RSA: no key, cannot verify
    wrong_key = _signed(rsa, b"x", 3)
    wrong_key.key = ed2.public_key.serialize()  # a key that does not hash to the sender
    cases.append(wrong_key)
    impostor = _signed(ed2, b"x", 4)
    impostor.from_id = ID.from_pubkey(ed.public_key).to_bytes()
    cases.append(impostor)

    for _ in range(2):  # second round: keys come from the cache
        results = [(verify_signature(m), STOCK_SIGNATURE_VALIDATOR(m)) for m in cases]
        assert [ours for ours, _ in results] == [stock for _, stock in results]
    assert [ours for ours, _ in results].count(True) == 3


def test_stock_decodes_the_signers_key_for_every_message_and_the_patch_once(monkeypatch):
    """The limit: stock ``signature_validator`` extracts the sender's key from its peer id for every message;
    patched (the validator of every Pubsub once applied), once per sender."""
    extracted = []
    real_extract = ID.extract_public_key

    def counting_extract(self):
        extracted.append(self)
        return real_extract(self)

    monkeypatch.setattr(ID, "extract_public_key", counting_extract)
    sender = create_new_key_pair()
    messages = [_signed(sender, b"m%d" % i, i) for i in range(20)]

    pubsub_signer_keys.revert()
    try:
        assert pubsub_mod.signature_validator is STOCK_SIGNATURE_VALIDATOR
        assert all(pubsub_mod.signature_validator(m) for m in messages)
        stock_decodes = len(extracted)
    finally:
        pubsub_signer_keys.apply()
    extracted.clear()
    assert pubsub_mod.signature_validator is pubsub_signer_keys.validate_signature
    assert all(pubsub_mod.signature_validator(m) for m in messages)
    assert stock_decodes >= 20
    assert len(extracted) <= 1  # the first message of a new sender
    bad = rpc_pb2.Message()
    bad.CopyFrom(messages[0])
    bad.data = b"tampered"
    assert not pubsub_mod.signature_validator(bad)  # the Ed25519 check still runs for every message
