"""A versioned, length-bounded binary codec for our message types.

Layout of one encoded message::

    byte 0      codec version (``CODEC_VERSION``); anything else is rejected
    byte 1      message type (see ``messages.MESSAGE_TYPES``)
    byte 2..    the fields, in the order the message class declares them:
                  u  unsigned varint            f  IEEE-754 double, 8 bytes big-endian
                  b  varint length + bytes      s  varint length + UTF-8
                  S  varint count + that many s ?  optional: one byte 0/1, then the field

Decoding never trusts a length: every length is checked against what is left and against ``max_size``, and every
failure raises :class:`DecodeError` with a reason a log line and a counter can carry. Adding a field means a new
codec version; old peers then reject the message with a clear reason instead of misreading it.
"""

from __future__ import annotations

import struct
from dataclasses import fields as dc_fields
from typing import Any, ClassVar

from p2p_fast._ext import decode_uvarint, encode_uvarint

CODEC_VERSION = 1
DEFAULT_MAX_SIZE = 1024 * 1024
_DOUBLE = struct.Struct(">d")


class DecodeError(ValueError):
    """A message that cannot be decoded; ``reason`` is a short machine-friendly tag for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


class Message:
    """Base of all message dataclasses: ``TYPE`` is the wire type, ``KINDS`` the field kinds in order."""

    TYPE: ClassVar[int]
    KINDS: ClassVar[str]


_REGISTRY: dict[int, type[Message]] = {}


def register(cls: type[Message]) -> type[Message]:
    if cls.TYPE in _REGISTRY:
        raise ValueError(f"message type {cls.TYPE} registered twice")
    if len(cls.KINDS.replace("?", "")) != len(dc_fields(cls)):  # type: ignore[arg-type]
        raise ValueError(f"{cls.__name__}: KINDS does not match its fields")
    _REGISTRY[cls.TYPE] = cls
    return cls


def _kinds(cls: type[Message]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    optional = False
    for ch in cls.KINDS:
        if ch == "?":
            optional = True
            continue
        out.append((ch, optional))
        optional = False
    return out


def _put_bytes(out: bytearray, data: bytes) -> None:
    out += encode_uvarint(len(data))
    out += data


def _encode_value(out: bytearray, kind: str, value: Any) -> None:
    if kind == "u":
        out += encode_uvarint(int(value))
    elif kind == "f":
        out += _DOUBLE.pack(float(value))
    elif kind == "b":
        _put_bytes(out, bytes(value))
    elif kind == "s":
        _put_bytes(out, value.encode("utf-8"))
    elif kind == "S":
        out += encode_uvarint(len(value))
        for item in value:
            _put_bytes(out, item.encode("utf-8"))
    else:  # pragma: no cover - schema bug
        raise ValueError(f"unknown field kind {kind!r}")


def encode(msg: Message, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    cls = type(msg)
    out = bytearray((CODEC_VERSION, cls.TYPE))
    for f, (kind, optional) in zip(dc_fields(msg), _kinds(cls)):  # type: ignore[arg-type]
        value = getattr(msg, f.name)
        if optional:
            out.append(0 if value is None else 1)
            if value is None:
                continue
        _encode_value(out, kind, value)
    if len(out) > max_size:
        raise ValueError(f"{cls.__name__} is {len(out)} bytes encoded, over the {max_size}-byte limit")
    return bytes(out)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def uvarint(self) -> int:
        try:
            value, self.pos = decode_uvarint(self.buf, self.pos)
        except ValueError as exc:
            raise DecodeError("bad-varint", str(exc)) from None
        return value

    def take(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            raise DecodeError("truncated", f"needs {n} bytes at offset {self.pos}, {len(self.buf) - self.pos} left")
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def text(self) -> str:
        raw = self.take(self.uvarint())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("bad-utf8", f"string field at offset {self.pos - len(raw)}") from None


def _decode_value(r: _Reader, kind: str) -> Any:
    if kind == "u":
        return r.uvarint()
    if kind == "f":
        return _DOUBLE.unpack(r.take(8))[0]
    if kind == "b":
        return r.take(r.uvarint())
    if kind == "s":
        return r.text()
    if kind == "S":
        count = r.uvarint()
        if count > len(r.buf) - r.pos:  # every item takes at least one byte
            raise DecodeError("truncated", f"list of {count} items cannot fit")
        return [r.text() for _ in range(count)]
    raise DecodeError("bad-schema", kind)  # pragma: no cover


def decode(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Message:
    if len(data) > max_size:
        raise DecodeError("oversized", f"{len(data)} bytes, limit {max_size}")
    if len(data) < 2:
        raise DecodeError("truncated", f"{len(data)} bytes is shorter than the 2-byte header")
    if data[0] != CODEC_VERSION:
        raise DecodeError("bad-version", f"codec version {data[0]}, this node speaks {CODEC_VERSION}")
    cls = _REGISTRY.get(data[1])
    if cls is None:
        raise DecodeError("unknown-type", f"message type {data[1]}")
    r = _Reader(bytes(data))
    r.pos = 2
    values = []
    for kind, optional in _kinds(cls):
        if optional:
            flag = r.take(1)[0]
            if flag not in (0, 1):
                raise DecodeError("bad-flag", f"optional flag {flag} at offset {r.pos - 1}")
            if flag == 0:
                values.append(None)
                continue
        values.append(_decode_value(r, kind))
    if r.pos != len(r.buf):
        raise DecodeError("trailing-bytes", f"{len(r.buf) - r.pos} bytes after {cls.__name__}")
    return cls(*values)  # type: ignore[call-arg]
