"""p2p_fast.stack.patches.pubsub_own_signature: stock py-libp2p verifies the signature a publisher just made; with
the patch, that one check is skipped, once, and every other message (others', tampered, forged, older ones of ours)
is verified."""

from __future__ import annotations

import pytest
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.pubsub.pb import rpc_pb2

import libp2p.pubsub.pubsub as pubsub_mod
from p2p_fast.stack.patches import pubsub_own_signature, pubsub_signer_keys
from p2p_fast.stack.patches.pubsub_own_signature import _RecordingSigner
from pubsub_patch_helpers import build_pubsub, count, signed_message

pytestmark = pytest.mark.usefixtures("libp2p_patched")


def test_only_our_own_last_signature_skips_verification(monkeypatch):
    stock = count(monkeypatch, pubsub_signer_keys, "VERIFY")
    a, b = new_host(key_pair=create_new_key_pair()), new_host(key_pair=create_new_key_pair())
    ours, theirs = build_pubsub(a, True), build_pubsub(b, False)
    validate = pubsub_mod.signature_validator

    mine = signed_message(ours, b"hello", 1)
    assert validate(mine) and not stock.calls  # our own fresh signature, checked by our publish: no Ed25519 check
    assert validate(mine) and len(stock.calls) == 1  # any later check of it (e.g. a receiver's) verifies
    stock.calls.clear()

    tampered = rpc_pb2.Message()
    tampered.CopyFrom(mine)
    tampered.data = b"hellO"
    assert not validate(tampered) and len(stock.calls) == 1  # same signature, other payload: verified, fails

    from_b = signed_message(theirs, b"hi", 7)
    assert validate(from_b) and len(stock.calls) == 2  # others' messages: always verified

    forged = signed_message(theirs, b"hi", 8)
    forged.from_id = a.get_id().to_bytes()  # claims to be us, signed by b
    assert not validate(forged) and len(stock.calls) == 3

    older = signed_message(ours, b"one", 2)
    signed_message(ours, b"two", 3)  # our signer moved on: the older message is verified like any other
    assert validate(older) and len(stock.calls) == 4


def test_stock_verifies_the_publishers_own_fresh_signature_and_the_patch_does_not(monkeypatch):
    """The same pubsub, its own fresh message: without the patch (undone) the validator verifies it; with it, not."""
    verified = count(monkeypatch, pubsub_signer_keys, "VERIFY")
    host = new_host(key_pair=create_new_key_pair())
    pubsub = build_pubsub(host, False)
    stock_key = pubsub.sign_key

    assert pubsub_mod.signature_validator(signed_message(pubsub, b"stock", 1))
    assert len(verified.calls) == 1  # stock: its own signature verified

    undo = pubsub_own_signature.record_own_signatures(pubsub)
    assert isinstance(pubsub.sign_key, _RecordingSigner)
    assert pubsub_mod.signature_validator(signed_message(pubsub, b"patched", 2))
    assert len(verified.calls) == 1  # patched: skipped

    undo()
    assert pubsub.sign_key is stock_key
    assert pubsub_mod.signature_validator(signed_message(pubsub, b"undone", 3))
    assert len(verified.calls) == 2  # undone: verified again
