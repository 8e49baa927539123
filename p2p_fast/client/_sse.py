"""Server-Sent Events parsed from the raw bytes of a response body, chunked transfer encoding included.

Why not ``http.client``'s ``readline``: on a chunked response it falls back to ``IOBase.readline``, which calls
``peek`` and ``read`` (each a walk through the chunk bookkeeping in Python) for every line, and an event is three or
four lines. The completion of a lone task waits for its event to be parsed; here the bytes the socket gave are cut
into events in one pass. :class:`SseParser` is fed whatever arrived (any split: mid-line, mid-chunk-header) and
returns the complete events in it, in order.
"""

from __future__ import annotations

from typing import NamedTuple


class SseEvent(NamedTuple):
    event: str  # "" for an event without an ``event:`` field (the client ignores those, like comments)
    data: str
    id: str | None


class SseParser:
    """Feed it body bytes (``chunked``: still in chunked transfer encoding); it returns the events completed.

    ``ended`` turns true at the last chunk (size 0): the server ended the stream."""

    def __init__(self, chunked: bool) -> None:
        self.chunked = chunked
        self.ended = False
        self._raw = b""  # chunked: bytes not yet decoded
        self._left = 0  # chunked: payload bytes left in the current chunk, then its CRLF
        self._crlf = False  # chunked: the CRLF after a chunk's payload is still to come
        self._text = b""  # decoded body not yet cut into events

    def feed(self, data: bytes) -> list[SseEvent]:
        if self.chunked:
            self._text += self._dechunk(data)
        else:
            self._text += data
        text = self._text.replace(b"\r\n", b"\n") if b"\r" in self._text else self._text  # LF or CRLF lines
        if b"\n\n" not in text:
            self._text = text
            return []
        *blocks, self._text = text.split(b"\n\n")
        return [ev for ev in map(_event, blocks) if ev is not None]

    def _dechunk(self, data: bytes) -> bytes:
        raw = self._raw + data
        out = []
        pos = 0
        while pos < len(raw) and not self.ended:
            if self._left:
                take = min(self._left, len(raw) - pos)
                out.append(raw[pos:pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    self._crlf = True
                continue
            if self._crlf:
                if len(raw) - pos < 2:
                    break
                if raw[pos:pos + 2] != b"\r\n":
                    raise ValueError("chunked body: no CRLF after a chunk")
                pos += 2
                self._crlf = False
                continue
            end = raw.find(b"\r\n", pos)
            if end < 0:
                if len(raw) - pos > 1024:
                    raise ValueError("chunked body: chunk size line too long")
                break
            size_text = raw[pos:end].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError(f"chunked body: bad chunk size {size_text[:20]!r}") from None
            pos = end + 2
            if size == 0:
                self.ended = True
                break
            self._left = size
        self._raw = raw[pos:]
        return b"".join(out)


def _event(block: bytes) -> SseEvent | None:
    event, data, seq = "", [], None
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line or line.startswith(":"):
            continue  # a comment (keepalive)
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            seq = value
    if not event and not data and seq is None:
        return None
    return SseEvent(event, "\n".join(data), seq)
