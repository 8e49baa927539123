"""Why a message was refused, in words a log line and a counter can carry.

protobuf's parser says only "Error parsing message"; after it refused a body (never on the good path) we walk the
wire format ourselves to name the problem: ``truncated`` (a field runs past the end), ``bad-varint`` (a varint
longer than 10 bytes or over 64 bits), ``bad-tag`` (field number 0 or too large), ``bad-wire-type`` (wire types 6
and 7, or a group that does not close), ``bad-utf8`` (a string field that is not UTF-8). For a message whose
required field is empty: ``wrong-type`` when the field came with another wire type (protobuf then skips it as
unknown), else ``missing-field``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

MAX_FIELD_NUMBER = (1 << 29) - 1
MAX_GROUP_DEPTH = 100  # protobuf's own recursion limit
_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "fixed32"}
_EXPECTED_WIRE = {FieldDescriptor.TYPE_STRING: 2, FieldDescriptor.TYPE_BYTES: 2, FieldDescriptor.TYPE_UINT64: 0,
                  FieldDescriptor.TYPE_DOUBLE: 1}


class DecodeError(ValueError):
    """A message that cannot be decoded; ``reason`` is a short machine-friendly tag for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


REASONS = frozenset({"oversized", "truncated", "bad-version", "unknown-type", "bad-varint", "bad-tag",
                     "bad-wire-type", "bad-utf8", "missing-field", "wrong-type", "bad-protobuf"})


def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    value = shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated", f"{what} at offset {start} runs past the end")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise DecodeError("bad-varint", f"{what} at offset {start} is longer than 10 bytes")
    if value >> 64:
        raise DecodeError("bad-varint", f"{what} at offset {start} is over 64 bits")
    return value, pos


def scan(buf: bytes, pb_class: Any) -> list[tuple[int, int, int, int]]:
    """Every top-level field of ``buf`` as (number, wire type, value start, value end); raises :class:`DecodeError`
    naming the first problem. String fields of ``pb_class`` are checked for UTF-8."""
    known = pb_class.DESCRIPTOR.fields_by_number
    out: list[tuple[int, int, int, int]] = []
    groups: list[int] = []
    pos = 0
    while pos < len(buf):
        tag_at = pos
        tag, pos = _varint(buf, pos, "field tag")
        number, wire = tag >> 3, tag & 7
        if number == 0 or number > MAX_FIELD_NUMBER:
            raise DecodeError("bad-tag", f"field number {number} at offset {tag_at}")
        start = pos
        if wire == 0:
            _, pos = _varint(buf, pos, f"field {number}")
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(buf):
                raise DecodeError("truncated", f"field {number} at offset {tag_at} runs past the end")
        elif wire == 2:
            length, start = _varint(buf, pos, f"length of field {number}")
            pos = start + length
            if pos > len(buf):
                raise DecodeError("truncated", f"field {number} at offset {tag_at}: {length} bytes announced, "
                                               f"{len(buf) - start} left")
            fd = known.get(number)
            if not groups and fd is not None and fd.type == FieldDescriptor.TYPE_STRING:
                try:
                    buf[start:pos].decode("utf-8")
                except UnicodeDecodeError:
                    raise DecodeError("bad-utf8", f"field {fd.name} at offset {start}") from None
        elif wire == 3:
            groups.append(number)
            if len(groups) > MAX_GROUP_DEPTH:
                raise DecodeError("bad-wire-type", f"groups nested deeper than {MAX_GROUP_DEPTH}")
            continue
        elif wire == 4:
            if not groups or groups.pop() != number:
                raise DecodeError("bad-wire-type", f"end of group {number} at offset {tag_at} without its start")
            continue
        else:
            raise DecodeError("bad-wire-type", f"wire type {wire} (field {number}) at offset {tag_at}")
        if not groups:
            out.append((number, wire, start, pos))
    if groups:
        raise DecodeError("truncated", f"group {groups[-1]} is not closed")
    return out


def explain_parse_error(name: str, pb_class: Any, body: bytes, exc: BaseException) -> DecodeError:
    """The :class:`DecodeError` for a body protobuf refused to parse."""
    try:
        scan(body, pb_class)
    except DecodeError as err:
        return DecodeError(err.reason, f"{name}: {err.args[0].split(': ', 1)[1]}")
    return DecodeError("bad-protobuf", f"{name}: {exc}")


def explain_missing(name: str, pb_class: Any, required: tuple[str, ...], parsed: Any, body: bytes) -> DecodeError:
    """The :class:`DecodeError` for a parsed message whose required field is empty."""
    fields = pb_class.DESCRIPTOR.fields_by_name
    missing = [n for n in required if not getattr(parsed, n)]
    try:
        seen = scan(body, pb_class)
    except DecodeError as err:  # protobuf accepted what our walk refuses: report the walk's reason
        return err
    for n in missing:
        fd = fields[n]
        want = _EXPECTED_WIRE[fd.type]
        for number, wire, _, _ in seen:
            if number == fd.number and wire != want:
                return DecodeError("wrong-type", f"{name}: {n} (field {fd.number}) came as {_WIRE_NAMES[wire]}, "
                                                 f"expected {_WIRE_NAMES[want]}")
    return DecodeError("missing-field", f"{name} without {', '.join(missing)}")
