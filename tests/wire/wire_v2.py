"""The "next release" of our wire schema (``v2.proto``) as a codec: what a newer node would send and read.

``to_v2`` turns one of our messages into its v2 protobuf with every added field set; ``encode_v2`` is the bytes a
newer node puts on the wire for it (the same two-byte header, the v2 body); ``decode_v2`` is a newer node's reader.
``install`` makes the codec of this process speak v2: its encoders emit the v2 fields on everything it sends, and
its decoders parse with the v2 classes (and report, once per message type, when a v2 field arrived: the evidence
that another new node sent one). That is exactly what a node built from v2.proto would do; the node itself is not
changed (tests/wire/v2_node/sitecustomize.py calls ``install`` in node processes started with P2P_TEST_WIRE=v2).
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # v2_pb2 beside this file

import v2_pb2  # noqa: E402

from p2p_fast.protocols import codec, messages  # noqa: E402,F401 - messages registers the classes

NOTE = "from a v2 node"
NUMBERS = [1, 300, 2**40]
EXTRA = ("ext", 0.5)
WEIGHT = 2.25


def v2_class(cls: type) -> Any:
    return getattr(v2_pb2, cls.PB.DESCRIPTOR.name)


def to_v2(msg: Any) -> Any:
    v2 = v2_class(type(msg))(**{f.name: getattr(msg, f.name) for f in fields(msg)})
    v2.v2_note = NOTE
    v2.v2_numbers.extend(NUMBERS)
    v2.v2_extra.name, v2.v2_extra.weight = EXTRA
    v2.v2_weight = WEIGHT
    return v2


def encode_v2(msg: Any) -> bytes:
    return bytes((codec.CODEC_VERSION, msg.TYPE)) + to_v2(msg).SerializeToString()


def decode_v2(data: bytes) -> Any:
    """A v2 node's reader: the header, then the v2 class of the type (old messages simply lack the v2 fields)."""
    assert data[0] == codec.CODEC_VERSION
    cls = next(c for c in codec.registered() if c.TYPE == data[1])
    return v2_class(cls).FromString(data[2:])


def has_v2_fields(parsed: Any) -> bool:
    return parsed.v2_note == NOTE and list(parsed.v2_numbers) == NUMBERS and parsed.HasField("v2_extra") \
        and (parsed.v2_extra.name, parsed.v2_extra.weight) == EXTRA and parsed.v2_weight == WEIGHT


def install() -> None:
    """Make this process's codec speak v2 (module doc)."""
    seen: set[str] = set()
    for cls in codec.registered():
        codec._ENCODERS[cls] = lambda m: to_v2(m).SerializeToString()
        _, _, build = codec._BY_TYPE[cls.TYPE]

        def build_v2(parsed: Any, build: Any = build, name: str = cls.__name__) -> Any:
            if name not in seen and has_v2_fields(parsed):
                seen.add(name)
                print(f"wire-v2: received a {name} with v2 fields", file=sys.stderr, flush=True)
            return build(parsed)

        codec._BY_TYPE[cls.TYPE] = (cls, v2_class(cls), build_v2)
    print("wire-v2: this node speaks the v2 schema", file=sys.stderr, flush=True)
