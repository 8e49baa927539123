"""The wire codec of our messages: a two-byte header, then the message as protobuf (``pb/messages.proto``).

Layout of one encoded message::

    byte 0      format version (``CODEC_VERSION``, 2); anything else is refused ("bad-version")
    byte 1      message type (``MessageType`` in the schema, ``TYPE`` on each dataclass); unknown: "unknown-type"
    byte 2..    the message, protobuf-encoded

Why protobuf: a reader skips fields it does not know, so a newer node may add an optional field and older nodes
keep reading its messages (a rolling update does not split the network); every libp2p implementation defines its
wire messages the same way. What protobuf does not check, we do on top: the whole message's size (``max_size``,
before parsing), the fields a message is refused without (``REQUIRED`` on each dataclass: a missing or empty one is
"missing-field", one sent with another wire type "wrong-type"), and every failure is a :class:`DecodeError` whose
``reason`` a log line and a counter can carry (``codec_errors`` names what protobuf only reports as "Error
parsing"). The evolution rules are in docs/protocol.md ("Changing the messages").

The dataclasses (``messages``) are what the rest of the code uses; ``register`` compiles, for each, an encoder
(dataclass -> protobuf bytes) and a builder (parsed protobuf -> dataclass, None when a required field is empty),
straight-line code without per-field loops, since this runs for every task frame and gossip message.
"""

from __future__ import annotations

import operator
from dataclasses import fields as dc_fields
from typing import Any, Callable, ClassVar

from google.protobuf.descriptor import FieldDescriptor

from p2p_fast.protocols.codec_errors import DecodeError, explain_missing, explain_parse_error

__all__ = ["CODEC_VERSION", "DEFAULT_MAX_SIZE", "DecodeError", "Message", "decode", "encode", "register"]

CODEC_VERSION = 2
DEFAULT_MAX_SIZE = 1024 * 1024


class Message:
    """Base of all message dataclasses: ``TYPE`` is the wire type byte, ``PB`` the protobuf class with the same
    fields, ``REQUIRED`` the fields that must be non-empty."""

    TYPE: ClassVar[int]
    PB: ClassVar[type]
    REQUIRED: ClassVar[tuple[str, ...]] = ()


# wire type byte -> (dataclass, protobuf class, builder); dataclass -> body encoder. Tests swap entries to run a
# node that speaks an extended schema (tests/wire/v2_shim).
_BY_TYPE: dict[int, tuple[type[Message], Any, Callable[[Any], Message | None]]] = {}
_ENCODERS: dict[type[Message], Callable[[Message], bytes]] = {}
_HEADERS: dict[type[Message], bytes] = {}


def registered() -> list[type[Message]]:
    """Every message class, in type order."""
    return [cls for _, (cls, _, _) in sorted(_BY_TYPE.items())]


def _compile(cls: type[Message]) -> tuple[Callable[[Message], bytes], Callable[[Any], Message | None]]:
    """Straight-line encoder and builder for ``cls`` (what ``dataclasses`` itself does for ``__init__``)."""
    pb_fields = cls.PB.DESCRIPTOR.fields_by_name
    names = [f.name for f in dc_fields(cls)]  # type: ignore[arg-type]
    if set(names) != set(pb_fields):
        raise ValueError(f"{cls.__name__}: fields {sorted(names)} differ from {cls.PB.DESCRIPTOR.full_name}'s "
                         f"{sorted(pb_fields)}")
    for name in cls.REQUIRED:
        if name not in pb_fields:
            raise ValueError(f"{cls.__name__}: required field {name!r} is not a field")
    # Setting a field to None in a protobuf constructor leaves it unset: optional fields need no branch.
    enc_src = (f"def encode_body(m):\n    return PB({', '.join(f'{n}=m.{n}' for n in names)}).SerializeToString()\n")
    args = []
    for n in names:
        fd = pb_fields[n]
        if fd.is_repeated:
            args.append(f"list(p.{n})")
        elif fd.has_presence:  # proto3 `optional`: None when absent
            args.append(f"(p.{n} if p.HasField({n!r}) else None)")
        else:
            args.append(f"p.{n}")
    check = f"    if not ({' and '.join(f'p.{n}' for n in cls.REQUIRED)}):\n        return None\n" \
        if cls.REQUIRED else ""
    build_src = f"def build(p):\n{check}    return cls({', '.join(args)})\n"
    scope: dict[str, Any] = {"PB": cls.PB, "cls": cls}
    exec(enc_src + build_src, scope)  # noqa: S102 - source built above from field names only
    return scope["encode_body"], scope["build"]


def register(cls: type[Message]) -> type[Message]:
    if cls.TYPE in _BY_TYPE or not 0 < cls.TYPE < 256:
        raise ValueError(f"message type {cls.TYPE} registered twice or out of range")
    encode_body, build = _compile(cls)
    _BY_TYPE[cls.TYPE] = (cls, cls.PB, build)
    _ENCODERS[cls] = encode_body
    _HEADERS[cls] = bytes((CODEC_VERSION, cls.TYPE))
    return cls


def _coerced(msg: Message) -> Any:
    """The message as its protobuf class, each value converted to the field's type (ints for ints, bytes from a
    bytearray...): the slow path when the fast encoder refused a value. Names the field that cannot be converted."""
    cls = type(msg)
    kwargs: dict[str, Any] = {}
    for fd in cls.PB.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        if value is None:
            continue
        try:
            conv = _CONVERT[fd.type]
            kwargs[fd.name] = [conv(v) for v in value] if fd.is_repeated else conv(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{cls.__name__}.{fd.name}: {value!r:.80} cannot be encoded ({exc})") from None
    try:
        return cls.PB(**kwargs)
    except (TypeError, ValueError) as exc:  # e.g. an integer out of uint64 range, a string with lone surrogates
        raise ValueError(f"{cls.__name__} cannot be encoded: {exc}") from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        value = int(value)
    value = operator.index(value)
    if not 0 <= value < 1 << 64:
        raise ValueError("out of the unsigned 64-bit range")
    return value


_CONVERT: dict[int, Callable[[Any], Any]] = {
    FieldDescriptor.TYPE_STRING: _text,
    FieldDescriptor.TYPE_BYTES: bytes,
    FieldDescriptor.TYPE_UINT64: _integer,
    FieldDescriptor.TYPE_DOUBLE: float,
}


def encode(msg: Message, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Header + protobuf body. ValueError when a field cannot be encoded or the result exceeds ``max_size``."""
    cls = type(msg)
    encode_body = _ENCODERS.get(cls)
    if encode_body is None:
        raise TypeError(f"{cls.__name__} is not a registered message")
    try:
        body = encode_body(msg)
    except (TypeError, ValueError):
        body = _coerced(msg).SerializeToString()
    out = _HEADERS[cls] + body
    if len(out) > max_size:
        raise ValueError(f"{cls.__name__} is {len(out)} bytes encoded, over the {max_size}-byte limit")
    return out


def decode(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Message:
    """One message from ``data``; fields it does not know are skipped. Every failure is a :class:`DecodeError`."""
    n = len(data)
    if n > max_size:
        raise DecodeError("oversized", f"{n} bytes, limit {max_size}")
    if n < 2:
        raise DecodeError("truncated", f"{n} bytes is shorter than the 2-byte header")
    if data[0] != CODEC_VERSION:
        raise DecodeError("bad-version", f"format version {data[0]}, this node speaks {CODEC_VERSION}")
    entry = _BY_TYPE.get(data[1])
    if entry is None:
        raise DecodeError("unknown-type", f"message type {data[1]}")
    cls, pb_class, build = entry
    body = data[2:] if n <= 65536 else memoryview(data)[2:]  # a big payload is not copied once more
    try:
        parsed = pb_class.FromString(body)
    except Exception as exc:  # protobuf's DecodeError; anything else it raises is refused the same way
        raise explain_parse_error(cls.__name__, pb_class, bytes(body), exc) from None
    msg = build(parsed)
    if msg is None:
        raise explain_missing(cls.__name__, pb_class, cls.REQUIRED, parsed, bytes(body))
    return msg
