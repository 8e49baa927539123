"""Two releases' codecs against each other, for every message type: this node's codec (the "old" reader and
writer) and the next release's, whose schema adds fields to every message (``v2.proto``, ``wire_v2.py``).

An old reader takes a new message (the added fields skipped, the known ones intact); a new reader takes an old
message (the added fields at their defaults); and a receipt signed by a new node verifies on an old one.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.secp256k1 import create_new_key_pair

import wire_v2
from p2p_fast.protocols import codec
from p2p_fast.protocols.codec import decode, encode
from p2p_fast.protocols.messages import (BlobGet, BlobPut, BlobReply, CapabilityAdvertisement, GossipText,
                                        TaskCancel, TaskReceipt, TaskRequest, TaskResponse)
from p2p_fast.protocols.tasks.ledger import RECEIPT_DOMAIN, receipt_bytes, sign_receipt, verify_receipt

PEER = "12D3KooWExamplePeer"
SAMPLES = {
    CapabilityAdvertisement: CapabilityAdvertisement(PEER, "worker", ["compute", "storage"], 4, 2, 1, 0.5,
                                                     ["/ip4/127.0.0.1/tcp/4001"], 9, 90.0, 1765000000.5),
    TaskRequest: TaskRequest("a" * 32, "echo", b"\x00payload", PEER, 2, 1, 30.0, 3, 1765000000.5),
    TaskResponse: TaskResponse("a" * 32, 2, PEER, 0, "", b"result", "d" * 64, 0.25),
    GossipText: GossipText(PEER, "héllo", 1765000000.5),
    TaskReceipt: TaskReceipt("a" * 32, 2, PEER, "12D3KooWWorker", 1, "d" * 64, 1765000000.5, b"sig"),
    TaskCancel: TaskCancel("a" * 32, 2, "timed out"),
    BlobPut: BlobPut("b" * 64, b"blob"),
    BlobGet: BlobGet("b" * 64),
    BlobReply: BlobReply("b" * 64, 0, b"blob", ""),
}
ALL = pytest.mark.parametrize("cls", codec.registered(), ids=lambda c: c.__name__)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


def test_every_message_type_has_a_sample_and_a_v2_form() -> None:
    assert set(SAMPLES) == set(codec.registered())


@ALL
def test_the_v2_schema_keeps_every_field_of_ours(cls: type) -> None:
    """The premise of the test: v2 only adds (same numbers, names and types for every field we have)."""
    ours = {f.number: (f.name, f.type, f.is_repeated) for f in cls.PB.DESCRIPTOR.fields}
    theirs = {f.number: (f.name, f.type, f.is_repeated) for f in wire_v2.v2_class(cls).DESCRIPTOR.fields}
    assert ours.items() <= theirs.items() and len(theirs) == len(ours) + 4


@ALL
def test_old_reader_takes_a_new_message(cls: type) -> None:
    msg = SAMPLES[cls]
    data = wire_v2.encode_v2(msg)
    assert len(data) > len(encode(msg)) + 20  # the v2 fields are on the wire
    assert decode(data) == msg


@ALL
def test_new_reader_takes_an_old_message(cls: type) -> None:
    msg = SAMPLES[cls]
    parsed = wire_v2.decode_v2(encode(msg))
    for f in fields(msg):
        value = getattr(parsed, f.name)
        want = getattr(msg, f.name)
        if want is None:
            assert not parsed.HasField(f.name)
        else:
            assert (list(value) if isinstance(want, list) else value) == want, f.name
    assert parsed.v2_note == "" and list(parsed.v2_numbers) == [] and not parsed.HasField("v2_extra") \
        and not parsed.HasField("v2_weight")
    assert wire_v2.has_v2_fields(wire_v2.decode_v2(wire_v2.encode_v2(msg)))  # and a new message, whole


def _value(fd: Any, required: bool) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return st.text(min_size=1 if required else 0, max_size=20)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(min_size=1 if required else 0, max_size=40)
    if fd.type == FieldDescriptor.TYPE_UINT64:
        return st.integers(0, 2**64 - 1)
    return st.floats()


def _messages(cls: type) -> st.SearchStrategy[Any]:
    args = []
    for f in fields(cls):
        fd = cls.PB.DESCRIPTOR.fields_by_name[f.name]
        value = _value(fd, f.name in cls.REQUIRED)
        args.append(st.lists(value, max_size=3) if fd.is_repeated else st.none() | value if fd.has_presence
                    else value)
    return st.builds(cls, *args)


@settings(max_examples=300, deadline=None)
@given(msg=st.one_of([_messages(cls) for cls in codec.registered()]))
def test_both_directions_for_generated_messages(msg: Any) -> None:
    old_read = decode(wire_v2.encode_v2(msg))
    assert all(_same(getattr(old_read, f.name), getattr(msg, f.name)) for f in fields(msg))
    new_read = wire_v2.decode_v2(encode(msg))
    for f in fields(msg):
        want = getattr(msg, f.name)
        if want is not None:
            got = getattr(new_read, f.name)
            assert _same(list(got) if isinstance(want, list) else got, want), f.name


def test_a_receipt_signed_by_a_new_node_verifies_on_an_old_one() -> None:
    """The signature covers the canonical bytes of fields 1-7, whatever else the receipt carried on the wire."""
    keys = create_new_key_pair()
    receipt = sign_receipt(SAMPLES[TaskReceipt], keys.private_key)
    received = decode(wire_v2.encode_v2(receipt))  # a v2 node sent it, with its extra fields
    assert verify_receipt(received, keys.public_key)
    assert not verify_receipt(received.__class__(**{**received.__dict__, "reward": 2}), keys.public_key)


def test_the_signed_bytes_are_the_pre_protobuf_encoding() -> None:
    """Receipts signed before the switch to protobuf still verify: the canonical bytes did not change (this vector
    is the old codec's ``encode`` of the receipt with an empty signature, taken before the switch)."""
    r = TaskReceipt("t" * 32, 3, "QmSubmitter", "QmWorker", 7, "ab" * 32, 1765000000.25, b"any")
    assert receipt_bytes(r) == RECEIPT_DOMAIN + bytes.fromhex(
        "0106207474747474747474747474747474747474747474747474747474747474747474030b516d5375626d697474657208516d57"
        "6f726b65720740616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261"
        "6261626162616261626162616261626162616241da4cf0d010000000")
    r = TaskReceipt("é-task", 2**63, "", "w", 0, "", -0.0, b"")
    assert receipt_bytes(r) == RECEIPT_DOMAIN + bytes.fromhex(
        "010607c3a92d7461736b808080808080808080010001770000800000000000000000")
