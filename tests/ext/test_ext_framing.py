"""Varints, frames and Yamux headers: wire rules, errors that name the problem, both implementations identical
on arbitrary bytes split at arbitrary points."""

from __future__ import annotations

import struct

import pytest
from ext_testkit import outcome
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.utils.varint import decode_uvarint as stock_decode_uvarint
from libp2p.utils.varint import encode_uvarint as stock_encode_uvarint

from p2p_fast._ext import FrameError

# ---------------------------------------------------------------- varints

VECTORS = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (300, "ac02"),
    (16383, "ff7f"),
    (16384, "808001"),
    (2**63, "80808080808080808001"),
    (2**64 - 1, "ffffffffffffffffff01"),
]


@pytest.mark.parametrize("value, hexed", VECTORS)
def test_uvarint_vectors(framing_impl, value: int, hexed: str) -> None:
    assert framing_impl.encode_uvarint(value).hex() == hexed
    assert framing_impl.decode_uvarint(bytes.fromhex(hexed)) == (value, len(hexed) // 2)
    assert framing_impl.decode_uvarint(b"\xaa" + bytes.fromhex(hexed) + b"\x05", 1) == (value, 1 + len(hexed) // 2)


@pytest.mark.parametrize(
    "hexed, problem",
    [
        ("", "truncated varint"),
        ("80", "truncated varint"),
        ("ffffffff", "truncated varint"),
        ("8000", "not minimally encoded"),
        ("ff80808000", "not minimally encoded"),
        ("ffffffffffffffffff02", "overflows 64 bits"),
        ("ffffffffffffffffff80", "overflows 64 bits"),
        ("ffffffffffffffffffff01", "overflows 64 bits"),
        ("80808080808080808000", "not minimally encoded"),
    ],
)
def test_uvarint_rejects(framing_impl, hexed: str, problem: str) -> None:
    with pytest.raises(FrameError, match=problem):
        framing_impl.decode_uvarint(bytes.fromhex(hexed))


def test_uvarint_encode_range(framing_impl) -> None:
    for bad in (-1, 2**64, 2**100):
        with pytest.raises(ValueError, match="out of range"):
            framing_impl.encode_uvarint(bad)
    for bad in (1.0, "1", None, b"\x01"):
        with pytest.raises(TypeError):
            framing_impl.encode_uvarint(bad)
    assert framing_impl.encode_uvarint(True) == b"\x01"


def test_uvarint_offset_bounds(framing_impl) -> None:
    with pytest.raises(ValueError, match="offset"):
        framing_impl.decode_uvarint(b"\x01", -1)
    with pytest.raises(ValueError, match="offset"):
        framing_impl.decode_uvarint(b"\x01", 2)
    with pytest.raises(FrameError, match="truncated"):
        framing_impl.decode_uvarint(b"\x01", 1)
    assert framing_impl.decode_uvarint(bytearray(b"\x96\x01")) == (150, 2)
    assert framing_impl.decode_uvarint(memoryview(b"\x00\x96\x01")[1:]) == (150, 2)


@given(st.integers(0, 2**64 - 1))
def test_uvarint_round_trip_and_libp2p_compat(framing_pair, value: int) -> None:
    encoded = framing_pair.c.encode_uvarint(value)
    assert encoded == framing_pair.py.encode_uvarint(value) == stock_encode_uvarint(value)
    assert len(encoded) <= framing_pair.c.MAX_UVARINT_LEN
    for m in framing_pair:
        assert m.decode_uvarint(encoded) == (value, len(encoded))
    assert stock_decode_uvarint(encoded) == value


@settings(max_examples=400)
@given(st.binary(max_size=14), st.integers(0, 3))
def test_uvarint_decode_agrees_on_arbitrary_bytes(framing_pair, data: bytes, offset: int) -> None:
    got = [outcome(m.decode_uvarint, data, offset) for m in framing_pair]
    assert got[0] == got[1]
    if got[0][0] == "ok":  # whatever we accept, py-libp2p decodes to the same value
        value, end = got[0][1]
        assert stock_decode_uvarint(data[offset:end]) == value


@given(st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=2), st.none()))
def test_uvarint_encode_agrees_on_anything(framing_pair, value) -> None:
    got = [outcome(m.encode_uvarint, value) for m in framing_pair]
    assert got[0][0] == got[1][0]
    if got[0][0] is not TypeError:
        assert got[0] == got[1]


# ---------------------------------------------------------------- frames


def test_encode_frame(framing_impl) -> None:
    assert framing_impl.encode_frame(b"") == b"\x00"
    assert framing_impl.encode_frame(b"abc") == b"\x03abc"
    assert framing_impl.encode_frame(bytearray(200)) == b"\xc8\x01" + bytes(200)
    assert framing_impl.encode_frame(memoryview(b"xyz")[1:]) == b"\x02yz"
    assert framing_impl.encode_frame(b"x" * 10, max_size=10) == b"\x0a" + b"x" * 10
    with pytest.raises(FrameError, match="frame of 11 bytes exceeds max_size 10"):
        framing_impl.encode_frame(b"x" * 11, max_size=10)
    with pytest.raises(TypeError):
        framing_impl.encode_frame("text")


def test_decoder_reassembles_across_chunks(framing_impl) -> None:
    payloads = [b"", b"a", b"b" * 127, b"c" * 128, b"d" * 5000]
    stream = b"".join(framing_impl.encode_frame(p) for p in payloads)
    for chunk in (1, 2, 3, 7, 128, 4096, len(stream)):
        decoder = framing_impl.FrameDecoder(max_size=10_000)
        frames = []
        for i in range(0, len(stream), chunk):
            frames += decoder.feed(stream[i : i + chunk])
        assert frames == payloads, chunk
        assert decoder.buffered == 0
        decoder.finish()


def test_decoder_big_frame_then_small_ones(framing_impl) -> None:
    big = bytes(range(256)) * 800  # 200 KiB: the compiled decoder lets go of its grown buffer afterwards
    stream = framing_impl.encode_frame(big) + framing_impl.encode_frame(b"after")
    decoder = framing_impl.FrameDecoder()
    frames = []
    for i in range(0, len(stream), 60_000):
        frames += decoder.feed(stream[i : i + 60_000])
    assert frames == [big, b"after"]
    assert decoder.feed(b"\x02hi\x01") == [b"hi"] and decoder.feed(b"!") == [b"!"]


def test_decoder_holds_partial_frames(framing_impl) -> None:
    decoder = framing_impl.FrameDecoder()
    assert decoder.feed(b"\x05ab") == []
    assert decoder.buffered == 3
    with pytest.raises(FrameError, match="truncated frame: input ended with 3 bytes"):
        decoder.finish()
    assert decoder.feed(bytearray(b"cde\x01")) == [b"abcde"]
    assert decoder.feed(memoryview(b"z\x00")) == [b"z", b""]
    assert decoder.buffered == 0
    assert decoder.max_size == framing_impl.DEFAULT_MAX_FRAME_SIZE


def test_decoder_refuses_an_oversized_frame_at_its_prefix(framing_impl) -> None:
    decoder = framing_impl.FrameDecoder(max_size=100)
    with pytest.raises(FrameError) as info:
        decoder.feed(b"\x02ok" + b"\x65")  # 101 declared, no payload sent yet
    assert str(info.value) == "frame of 101 bytes exceeds max_size 100"
    assert info.value.frames == [b"ok"]  # completed before the fault, still handed over
    with pytest.raises(FrameError, match="exceeds max_size 100"):  # stays failed
        decoder.feed(b"\x01x")


@pytest.mark.parametrize(
    "data, problem",
    [(b"\x80\x00", "not minimally encoded"), (b"\xff" * 10, "overflows 64 bits"), (b"\xff" * 9 + b"\x01", "exceeds")],
)
def test_decoder_malformed_prefix(framing_impl, data: bytes, problem: str) -> None:
    decoder = framing_impl.FrameDecoder()
    with pytest.raises(FrameError, match=problem) as info:
        for byte in data:  # byte by byte: detected as soon as it is certain
            decoder.feed(bytes([byte]))
    assert isinstance(info.value, ValueError)


def test_decoder_bad_arguments(framing_impl) -> None:
    with pytest.raises(ValueError):
        framing_impl.FrameDecoder(max_size=-1)
    decoder = framing_impl.FrameDecoder(max_size=0)
    assert decoder.feed(b"\x00\x00") == [b"", b""]
    with pytest.raises(TypeError):
        decoder.feed("text")


def _run_decoder(m, data: bytes, cuts: list[int], max_size: int):
    """Everything a decoder delivers for ``data`` fed in pieces cut at ``cuts``: (frames, error, buffered)."""
    decoder = m.FrameDecoder(max_size)
    frames: list[bytes] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for lo, hi in zip(bounds, bounds[1:]):
        try:
            frames += decoder.feed(data[lo:hi])
        except FrameError as exc:
            return frames + exc.frames, str(exc), None
    return frames, None, decoder.buffered


frame_streams = st.lists(st.binary(max_size=40), max_size=8).map(lambda ps: b"".join(len(p).to_bytes(1, "big") + p
                                                                                       for p in ps))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.binary(max_size=120), frame_streams, frame_streams.map(lambda s: s + b"\x80\x00")),
    st.lists(st.integers(0, 200), max_size=6),
    st.integers(0, 64),
)
def test_decoder_agrees_and_ignores_chunking(framing_pair, data: bytes, cuts: list[int], max_size: int) -> None:
    whole_c = _run_decoder(framing_pair.c, data, [], max_size)
    assert _run_decoder(framing_pair.py, data, [], max_size) == whole_c
    assert _run_decoder(framing_pair.c, data, cuts, max_size) == whole_c
    assert _run_decoder(framing_pair.py, data, cuts, max_size) == whole_c


@given(st.lists(st.binary(max_size=300), max_size=10), st.lists(st.integers(0, 4000), max_size=8))
def test_frames_round_trip(framing_pair, payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(framing_pair.c.encode_frame(p) for p in payloads)
    assert stream == b"".join(framing_pair.py.encode_frame(p) for p in payloads)
    for m in framing_pair:
        assert _run_decoder(m, stream, cuts, 300) == (payloads, None, 0)


# ---------------------------------------------------------------- yamux header


def test_yamux_header_layout(framing_impl) -> None:
    header = framing_impl.pack_yamux_header(1, 0x2, 7, 0x010203)
    assert header == struct.pack("!BBHII", 0, 1, 2, 7, 0x010203)  # py-libp2p's YAMUX_HEADER_FORMAT
    assert len(header) == framing_impl.YAMUX_HEADER_SIZE == 12
    assert framing_impl.unpack_yamux_header(header) == (0, 1, 2, 7, 0x010203)
    assert framing_impl.unpack_yamux_header(b"xx" + header + b"payload", 2) == (0, 1, 2, 7, 0x010203)
    assert framing_impl.unpack_yamux_header(bytearray(header)) == (0, 1, 2, 7, 0x010203)
    raw = bytes.fromhex("01 03 ffff ffffffff 00000000")
    assert framing_impl.unpack_yamux_header(raw) == (1, 3, 0xFFFF, 0xFFFFFFFF, 0)  # version is reported, not judged


def test_yamux_header_errors(framing_impl) -> None:
    with pytest.raises(FrameError, match="needs 12 bytes, got 11"):
        framing_impl.unpack_yamux_header(bytes(11))
    with pytest.raises(FrameError, match="needs 12 bytes, got 0"):
        framing_impl.unpack_yamux_header(bytes(12), 20)
    with pytest.raises(ValueError, match="offset"):
        framing_impl.unpack_yamux_header(bytes(12), -1)
    for args in ((256, 0, 0, 0), (0, 65536, 0, 0), (0, 0, 2**32, 0), (0, 0, 0, -1), (0, 0, 0, 2**80)):
        with pytest.raises(ValueError, match="yamux header field out of range"):
            framing_impl.pack_yamux_header(*args)
    with pytest.raises(TypeError):
        framing_impl.pack_yamux_header(0, 0, 1.0, 0)


u32 = st.integers(0, 2**32 - 1)


@given(st.integers(0, 255), st.integers(0, 2**16 - 1), u32, u32)
def test_yamux_round_trip(framing_pair, typ: int, flags: int, sid: int, length: int) -> None:
    header = framing_pair.c.pack_yamux_header(typ, flags, sid, length)
    assert header == framing_pair.py.pack_yamux_header(typ, flags, sid, length)
    for m in framing_pair:
        assert m.unpack_yamux_header(header) == (0, typ, flags, sid, length)


@given(st.lists(st.integers(-(2**33), 2**33), min_size=4, max_size=4), st.binary(max_size=20), st.integers(0, 10))
def test_yamux_agrees_on_anything(framing_pair, fields: list[int], raw: bytes, offset: int) -> None:
    assert outcome(framing_pair.c.pack_yamux_header, *fields) == outcome(framing_pair.py.pack_yamux_header, *fields)
    assert outcome(framing_pair.c.unpack_yamux_header, raw, offset) == outcome(
        framing_pair.py.unpack_yamux_header, raw, offset
    )
