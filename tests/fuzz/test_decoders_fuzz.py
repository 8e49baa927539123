"""Property-based fuzzing of everything that decodes bytes from the network: the message codec (with the compiled
and the pure-Python varints), task-stream framing (``FrameReader`` over both ``FrameDecoder`` implementations) and
the pubsub RPC parser we keep behind a guard. Bounded: a few thousand examples, a few seconds.

What must hold: no input makes a decoder raise anything but its own error type (``DecodeError`` with a reason,
``FrameError``); a frame never exceeds its limit; memory stays bounded whatever length a peer announces; and what
the encoder writes, the decoder reads back unchanged.
"""

from __future__ import annotations

import importlib
import math
import tracemalloc
from dataclasses import fields
from types import ModuleType
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_fast._ext import NO_EXTENSIONS
from p2p_fast.protocols import codec
from p2p_fast.protocols.codec import CODEC_VERSION, DecodeError, decode, encode
from p2p_fast.protocols.messages import (BlobGet, BlobPut, BlobReply, CapabilityAdvertisement, GossipText, HeartBeat,
                                        TaskCancel, TaskReceipt, TaskRequest, TaskResponse)

from harness import record
from observed import Observed

MESSAGES = [CapabilityAdvertisement, HeartBeat, TaskRequest, TaskResponse, GossipText, TaskReceipt, TaskCancel,
            BlobPut, BlobGet, BlobReply]
REASONS = {"oversized", "truncated", "bad-version", "unknown-type", "bad-varint", "bad-utf8", "bad-flag",
           "trailing-bytes"}
EXAMPLES = {"raw": 1500, "mutated": 600, "roundtrip": 300, "frames": 400}
SEEN = Observed()


def _framing(name: str) -> ModuleType | None:
    if name == "c":
        if NO_EXTENSIONS:
            return None
        try:
            return importlib.import_module("p2p_fast._ext._framing_c")
        except ImportError:
            return None
    return importlib.import_module("p2p_fast._ext._framing_py")


IMPLS = [pytest.param(n, id=n, marks=pytest.mark.skipif(_framing(n) is None, reason=f"_framing_{n} not built"))
         for n in ("c", "py")]


@pytest.fixture(params=IMPLS)
def varints(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The codec running on one varint implementation."""
    mod = _framing(request.param)
    assert mod is not None
    monkeypatch.setattr(codec, "decode_uvarint", mod.decode_uvarint)
    monkeypatch.setattr(codec, "encode_uvarint", mod.encode_uvarint)
    yield mod


# -- values of every field kind, including the awkward ones ------------------------------------------------------
_text = st.text(max_size=40)
_uint = st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1))
_float = st.floats(allow_nan=True, allow_infinity=True)
_KIND = {"u": _uint, "f": _float, "b": st.binary(max_size=200), "s": _text, "S": st.lists(_text, max_size=5)}


def _message(cls: type) -> st.SearchStrategy[Any]:
    kinds = codec._kinds(cls)  # type: ignore[arg-type]
    return st.builds(cls, *[(_KIND[k] if not opt else st.none() | _KIND[k]) for k, opt in kinds])


any_message = st.one_of([_message(cls) for cls in MESSAGES])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@settings(max_examples=EXAMPLES["raw"], deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300),
                      st.binary(max_size=300).map(lambda b: bytes([CODEC_VERSION]) + b),
                      st.tuples(st.integers(1, 10), st.binary(max_size=300)).map(
                          lambda t: bytes([CODEC_VERSION, t[0]]) + t[1])))
@SEEN.watch("raw")
def test_decode_raises_only_decode_error_with_a_reason(varints: ModuleType, data: bytes) -> None:
    try:
        msg = decode(data)
    except DecodeError as exc:
        assert exc.reason in REASONS, exc.reason
        return
    assert type(msg) in MESSAGES
    assert encode(msg) == data  # a message that decodes has one encoding: nothing is silently ignored


@settings(max_examples=EXAMPLES["mutated"], deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=any_message, cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       truncate=st.integers(0, 10**6))
@SEEN.watch("mutated")
def test_mutated_encodings_are_refused_or_read_whole(varints: ModuleType, msg: Any, cuts: list[tuple[int, int]],
                                                     truncate: int) -> None:
    data = bytearray(encode(msg))
    for pos, value in cuts:
        data[pos % len(data)] = value
    for variant in (bytes(data), bytes(data[: truncate % (len(data) + 1)])):
        try:
            got = decode(variant)
        except DecodeError as exc:
            assert exc.reason in REASONS
            continue
        assert encode(got) == variant


@settings(max_examples=EXAMPLES["roundtrip"], deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=any_message)
@SEEN.watch("roundtrip")
def test_what_is_encoded_decodes_unchanged(varints: ModuleType, msg: Any) -> None:
    got = decode(encode(msg))
    assert type(got) is type(msg)
    for f in fields(msg):
        a, b = getattr(msg, f.name), getattr(got, f.name)
        assert _same(a, b) or (isinstance(a, bytes) and a == bytes(b)), (f.name, a, b)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=EXAMPLES["frames"], deadline=None)
@given(chunks=st.lists(st.binary(max_size=400), max_size=20), limit=st.integers(0, 512))
@SEEN.watch("frames")
def test_frame_decoder_only_frame_errors_and_never_over_its_limit(impl: str, chunks: list[bytes],
                                                                  limit: int) -> None:
    mod = _framing(impl)
    dec = mod.FrameDecoder(limit)
    for chunk in chunks:
        try:
            frames = dec.feed(chunk)
        except mod.FrameError:
            break
        assert all(len(f) <= limit for f in frames)
        assert dec.buffered <= limit + 10  # a partial frame: at most its length prefix and body


@pytest.mark.parametrize("impl", IMPLS)
def test_announced_lengths_do_not_allocate(impl: str) -> None:
    """A peer that announces huge frames (or sends a 16 MiB trickle of one) costs us what it sent, not what it
    announced; over the limit the decoder refuses at the prefix."""
    mod = _framing(impl)
    limit = 1024 * 1024 + 64 * 1024
    tracemalloc.start()
    try:
        for announced in (2**63, 2**40, 64 * 1024 * 1024, limit + 1):
            dec = mod.FrameDecoder(limit)
            with pytest.raises(mod.FrameError):
                dec.feed(mod.encode_uvarint(announced) + b"x" * 100)
        dec = mod.FrameDecoder(limit)
        dec.feed(mod.encode_uvarint(limit))  # a legal, large frame announced, then sent in small pieces
        for _ in range(64):
            assert dec.feed(b"y" * 4096) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=400))
@SEEN.watch("rpc")
def test_pubsub_rpc_parser_raises_only_decode_error(data: bytes) -> None:
    """What reached py-libp2p's Pubsub reader unguarded (and stopped the node): protobuf's DecodeError is the only
    failure, which our stream-handler guard turns into a reset stream."""
    from google.protobuf.message import DecodeError as ProtoDecodeError
    from libp2p.pubsub.pb import rpc_pb2

    try:
        rpc_pb2.RPC().ParseFromString(data)
    except ProtoDecodeError:
        pass


def test_zz_figures() -> None:
    """Runs last in this module: records what the properties above observed (inputs, crashes, violations), then
    requires that none crashed or broke its property."""
    SEEN.require_inputs()
    figures = SEEN.figures()
    record("decoder_fuzz", **figures)
    assert figures["crashes"] == 0 and figures["violations"] == 0, figures["failing"]
