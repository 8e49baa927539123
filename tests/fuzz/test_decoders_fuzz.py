"""Property-based fuzzing of everything of ours that decodes bytes from the network: the message codec
(``codec.decode``: protobuf parsing plus our checks and error naming), its error walker (``codec_errors.scan``) and
task-stream framing (``FrameDecoder`` over its compiled and pure-Python implementations). Bounded: a few thousand
examples, a few seconds.

What must hold: no input makes one of our decoders raise anything but its own error type (``DecodeError`` with a
known reason, ``FrameError``); whatever ``decode`` accepts is a well-typed message with its required fields, that
encodes and decodes back to itself; a valid message with fields added (a newer node's) decodes to the same message;
a frame never exceeds its limit; memory stays bounded whatever length a peer announces; and our error walker
refuses exactly the bodies protobuf refuses, so every refusal gets a reason.
"""

from __future__ import annotations

import importlib
import math
import tracemalloc
from dataclasses import fields
from types import ModuleType
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_fast._ext import NO_EXTENSIONS
from p2p_fast.protocols import codec, messages  # noqa: F401 - messages registers the message classes
from p2p_fast.protocols.codec import CODEC_VERSION, DecodeError, decode, encode
from p2p_fast.protocols.codec_errors import REASONS, scan

from harness import record
from observed import Observed

MESSAGES = codec.registered()
TYPES = [cls.TYPE for cls in MESSAGES]
EXAMPLES = {"raw": 1500, "mutated": 600, "extended": 300, "roundtrip": 300, "walker": 600, "frames": 400}
SEEN = Observed()
OUTCOMES: dict[str, int] = {}  # what decode answered: "accepted" or the refusal's reason


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


# -- values of every field type, including the awkward ones, from the schema itself ---------------------------------
_text = st.text(max_size=40)
_SCALAR = {
    FieldDescriptor.TYPE_STRING: _text,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=200),
    FieldDescriptor.TYPE_UINT64: st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1)),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
}
_PYTYPE = {FieldDescriptor.TYPE_STRING: str, FieldDescriptor.TYPE_BYTES: bytes, FieldDescriptor.TYPE_UINT64: int,
           FieldDescriptor.TYPE_DOUBLE: float}


def _field(cls: type, name: str) -> st.SearchStrategy[Any]:
    fd = cls.PB.DESCRIPTOR.fields_by_name[name]
    if name in cls.REQUIRED:
        return _text.filter(bool) if fd.type == FieldDescriptor.TYPE_STRING else st.binary(min_size=1, max_size=80)
    value = _SCALAR[fd.type]
    if fd.is_repeated:
        return st.lists(value, max_size=5)
    return st.none() | value if fd.has_presence else value


def _message(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, *[_field(cls, f.name) for f in fields(cls)])


any_message = st.one_of([_message(cls) for cls in MESSAGES])


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@st.composite
def unknown_fields(draw: Any) -> bytes:
    """Well-formed fields with numbers our schema does not use: what a newer node's extra fields look like."""
    out = bytearray()
    for _ in range(draw(st.integers(1, 4))):
        number = draw(st.integers(12, 2**29 - 1))
        wire = draw(st.sampled_from([0, 1, 2, 5]))
        out += _uvarint(number << 3 | wire)
        if wire == 0:
            out += _uvarint(draw(st.integers(0, 2**64 - 1)))
        elif wire == 2:
            value = draw(st.binary(max_size=40))
            out += _uvarint(len(value)) + value
        else:
            out += draw(st.binary(min_size=8 if wire == 1 else 4, max_size=8 if wire == 1 else 4))
    return bytes(out)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _same_message(a: Any, b: Any) -> bool:
    return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))


def _check_valid(msg: Any) -> None:
    """What ``decode`` returns: a registered message, every field of its declared type, the required ones set, and
    stable: it encodes and decodes back to itself."""
    cls = type(msg)
    assert cls in MESSAGES
    for fd in cls.PB.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        if fd.is_repeated:
            assert isinstance(value, list) and all(isinstance(v, _PYTYPE[fd.type]) for v in value), fd.name
        elif value is not None or not fd.has_presence:
            assert type(value) is _PYTYPE[fd.type], (fd.name, value)
    assert all(getattr(msg, name) for name in cls.REQUIRED)
    assert _same_message(decode(encode(msg)), msg)


def _decode_checked(data: bytes) -> Any:
    """decode(data): a valid message, or None after a DecodeError with a known reason; anything else fails."""
    try:
        msg = decode(data)
    except DecodeError as exc:
        assert exc.reason in REASONS, exc.reason
        assert exc.reason != "bad-protobuf", exc  # our walker names every refusal protobuf makes
        OUTCOMES[exc.reason] = OUTCOMES.get(exc.reason, 0) + 1
        return None
    _check_valid(msg)
    OUTCOMES["accepted"] = OUTCOMES.get("accepted", 0) + 1
    return msg


@settings(max_examples=EXAMPLES["raw"], deadline=None)
@given(data=st.one_of(st.binary(max_size=300),
                      st.binary(max_size=300).map(lambda b: bytes([CODEC_VERSION]) + b),
                      st.tuples(st.sampled_from(TYPES), st.binary(max_size=300)).map(
                          lambda t: bytes([CODEC_VERSION, t[0]]) + t[1])))
@SEEN.watch("raw")
def test_decode_raises_only_decode_error_with_a_reason(data: bytes) -> None:
    _decode_checked(data)


@settings(max_examples=EXAMPLES["mutated"], deadline=None)
@given(msg=any_message, extra=st.none() | unknown_fields(),
       cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       truncate=st.integers(0, 10**6))
@SEEN.watch("mutated")
def test_mutated_encodings_are_refused_or_read_as_valid_messages(msg: Any, extra: bytes | None,
                                                                 cuts: list[tuple[int, int]], truncate: int) -> None:
    data = bytearray(encode(msg) + (extra or b""))
    for pos, value in cuts:
        data[pos % len(data)] = value
    for variant in (bytes(data), bytes(data[: truncate % (len(data) + 1)])):
        _decode_checked(variant)


@settings(max_examples=EXAMPLES["extended"], deadline=None)
@given(msg=any_message, extra=unknown_fields(), where=st.integers(0, 10**6))
@SEEN.watch("extended")
def test_fields_a_newer_node_adds_are_skipped(msg: Any, extra: bytes, where: int) -> None:
    """Unknown fields anywhere between the known ones (protobuf writers may order fields freely)."""
    data = encode(msg)
    body = data[2:]
    cut = 0
    if body:  # cut between two top-level fields, never inside one
        bounds = [0] + [end for _, _, _, end in scan(body, type(msg).PB)]
        cut = bounds[where % len(bounds)]
    got = _decode_checked(data[:2] + body[:cut] + extra + body[cut:])
    assert got is not None and _same_message(got, msg)


@settings(max_examples=EXAMPLES["roundtrip"], deadline=None)
@given(msg=any_message)
@SEEN.watch("roundtrip")
def test_what_is_encoded_decodes_unchanged(msg: Any) -> None:
    got = decode(encode(msg))
    assert _same_message(got, msg), (msg, got)


@settings(max_examples=EXAMPLES["walker"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(MESSAGES), body=st.one_of(st.binary(max_size=200), unknown_fields()))
@SEEN.watch("walker")
def test_the_error_walker_refuses_exactly_what_protobuf_refuses(cls: type, body: bytes) -> None:
    """``scan`` names the reasons; if it passed a body protobuf refuses, that refusal would have no reason."""
    try:
        cls.PB.FromString(body)
        protobuf_ok = True
    except Exception:
        protobuf_ok = False
    try:
        scan(body, cls.PB)
        ours_ok = True
    except DecodeError as exc:
        assert exc.reason in REASONS
        ours_ok = False
    assert ours_ok == protobuf_ok, body


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
def test_pubsub_rpc_parser_raises_only_decode_error(data: bytes) -> None:
    """Not a decoder of ours, and not counted in the figures: the assumption our stream-handler guard rests on.
    What reached py-libp2p's Pubsub reader unguarded (and stopped the node): protobuf's DecodeError is the only
    failure, which our stream-handler guard turns into a reset stream."""
    from google.protobuf.message import DecodeError as ProtoDecodeError
    from libp2p.pubsub.pb import rpc_pb2

    try:
        rpc_pb2.RPC().ParseFromString(data)
    except ProtoDecodeError:
        pass


def test_zz_figures() -> None:
    """Runs last in this module: records what the properties above observed (inputs, crashes, violations, and what
    ``decode`` answered), then requires that none crashed or broke its property."""
    SEEN.require_inputs()
    figures = SEEN.figures()
    record("decoder_fuzz", **figures, decode_outcomes=dict(sorted(OUTCOMES.items())))
    assert figures["crashes"] == 0 and figures["violations"] == 0, figures["failing"]
