"""``p2p_fast.client._sse.SseParser``: the events of a Server-Sent Events body, whatever its chunking by the server
(chunked transfer encoding) and its splitting by the socket, are the events the node wrote, in order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_fast.client._sse import SseEvent, SseParser

NAME = st.sampled_from(["hello", "task", "overflow"])
TEXT = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40)
EVENT = st.builds(SseEvent, NAME, TEXT, st.one_of(st.none(), st.integers(0, 10**9).map(str)))


def _wire(events: list[SseEvent], keepalives: list[bool]) -> bytes:
    """As ``api.events`` writes them: ``id``, ``event``, ``data`` lines, a blank line; keepalive comments between."""
    out = []
    for ev, keepalive in zip(events, keepalives):
        if keepalive:
            out.append(b": keepalive\n\n")
        lines = ([f"id: {ev.id}"] if ev.id is not None else []) + [f"event: {ev.event}", f"data: {ev.data}"]
        out.append(("\n".join(lines) + "\n\n").encode())
    return b"".join(out)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos = [], 0
    for size in sizes:
        if pos >= len(body):
            break
        part = body[pos:pos + size]
        out.append(b"%x\r\n%s\r\n" % (len(part), part))
        pos += len(part)
    if pos < len(body):
        out.append(b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:]))
    return b"".join(out) + b"0\r\n\r\n"


def _feed_split(parser: SseParser, data: bytes, cuts: list[int]) -> list[SseEvent]:
    got: list[SseEvent] = []
    points = sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]
    start = 0
    for end in points:
        got += parser.feed(data[start:end])
        start = end
    return got


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENT, max_size=8), st.data())
def test_chunked_and_split_anywhere_the_same_events(events: list[SseEvent], data: st.DataObject) -> None:
    keepalives = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    body = _wire(events, keepalives)
    wire = _chunked(body, data.draw(st.lists(st.integers(1, 64), max_size=20)))
    parser = SseParser(chunked=True)
    got = _feed_split(parser, wire, data.draw(st.lists(st.integers(0, 10**6), max_size=30)))
    assert got == events
    assert parser.ended


@settings(max_examples=100, deadline=None)
@given(st.lists(EVENT, max_size=6), st.lists(st.integers(0, 10**6), max_size=20))
def test_unchunked_body_with_crlf_lines(events: list[SseEvent], cuts: list[int]) -> None:
    body = _wire(events, [False] * len(events)).replace(b"\n", b"\r\n")
    assert _feed_split(SseParser(chunked=False), body, cuts) == events


def test_bad_chunk_framing_is_an_error() -> None:
    with pytest.raises(ValueError, match="chunk size"):
        SseParser(chunked=True).feed(b"zz\r\nhello\r\n")
    with pytest.raises(ValueError, match="CRLF"):
        SseParser(chunked=True).feed(b"2\r\nabXY")
