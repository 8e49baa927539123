"""Message ids: the documented XXH64 layout, both implementations identical, usable by a real py-libp2p Pubsub."""

from __future__ import annotations

import struct

import pytest
import xxhash
from ext_testkit import outcome
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.pubsub.pb import rpc_pb2


def reference_id(from_id: bytes, seqno: bytes, data: bytes) -> bytes:
    """The id spelled out from its definition, with the xxhash package."""
    layout = struct.pack(">I", len(from_id)) + from_id + struct.pack(">I", len(seqno)) + seqno + data
    return xxhash.xxh64(layout, seed=0).digest()


def test_known_vector(msgid_impl) -> None:
    # pins the layout: a change here changes every id on the network
    assert msgid_impl.message_id_bytes(b"a", b"b", b"c").hex() == "bfb548b7fda4b620"
    assert msgid_impl.message_id_bytes(b"a", b"b", b"c") == reference_id(b"a", b"b", b"c")
    assert msgid_impl.ID_SIZE == 8


def test_length_prefixes_keep_fields_apart(msgid_impl) -> None:
    ids = {
        msgid_impl.message_id_bytes(b"ab", b"c", b""),
        msgid_impl.message_id_bytes(b"a", b"bc", b""),
        msgid_impl.message_id_bytes(b"a", b"b", b"c"),
        msgid_impl.message_id_bytes(b"", b"abc", b""),
        msgid_impl.message_id_bytes(b"", b"", b"abc"),
    }
    assert len(ids) == 5


@pytest.mark.parametrize("size", [0, 1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 100, 255, 4096, 70_000])
def test_every_tail_and_stripe_length(msgid_impl, size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    for from_id in (b"", b"x" * 5, b"\x00\x24" + b"p" * 36):
        assert msgid_impl.message_id_bytes(from_id, b"\x00" * 8, data[:size]) == reference_id(
            from_id, b"\x00" * 8, data[:size]
        )


def test_bytes_like_inputs(msgid_impl) -> None:
    expected = msgid_impl.message_id_bytes(b"peer", b"12345678", b"payload")
    assert msgid_impl.message_id_bytes(bytearray(b"peer"), memoryview(b"12345678"), bytearray(b"payload")) == expected


@pytest.mark.parametrize("bad", ["text", None, 5, 1.5])
def test_non_bytes_rejected(msgid_impl, bad) -> None:
    with pytest.raises(TypeError):
        msgid_impl.message_id_bytes(bad, b"", b"")
    with pytest.raises(TypeError):
        msgid_impl.message_id_bytes(b"", b"", bad)


def test_message_id_of_a_real_rpc_message(msgid_impl) -> None:
    msg = rpc_pb2.Message(from_id=b"\x00\x24" + bytes(36), seqno=(7).to_bytes(8, "big"), data=b"hello",
                          topicIDs=["t"], signature=b"s" * 64, key=b"k" * 36)
    assert msgid_impl.message_id(msg) == reference_id(msg.from_id, msg.seqno, msg.data)
    # signature, key and topics are not part of the id
    msg2 = rpc_pb2.Message()
    msg2.CopyFrom(msg)
    msg2.signature = b"t" * 64
    msg2.topicIDs.append("u")
    assert msgid_impl.message_id(msg2) == msgid_impl.message_id(msg)
    assert msgid_impl.message_id(rpc_pb2.Message()) == reference_id(b"", b"", b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=12), st.binary(max_size=700))
def test_both_implementations_agree(msgid_pair, from_id: bytes, seqno: bytes, data: bytes) -> None:
    c_id = msgid_pair.c.message_id_bytes(from_id, seqno, data)
    assert c_id == msgid_pair.py.message_id_bytes(from_id, seqno, data) == reference_id(from_id, seqno, data)
    msg = rpc_pb2.Message(from_id=from_id, seqno=seqno, data=data)
    assert msgid_pair.c.message_id(msg) == msgid_pair.py.message_id(msg) == c_id


@given(st.one_of(st.binary(max_size=4), st.text(max_size=4), st.integers(), st.none()))
def test_both_implementations_fail_alike(msgid_pair, value) -> None:
    got = [outcome(m.message_id_bytes, value, b"s", value) for m in msgid_pair]
    assert got[0][0] == got[1][0]
