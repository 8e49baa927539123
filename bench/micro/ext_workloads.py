"""Micro-benchmark workloads for the hot paths in ``p2p_fast._ext``: one timeit statement per operation, run the
same way against the compiled module and its pure-Python twin (``test_bench_ext.py`` with pytest-benchmark, and
``ratios.py`` with timeit). Inputs are realistic sizes: a 38-byte peer id, 8-byte seqno, 256-byte payload, a
10 000-entry seen-cache, 1 000 validation results, 1 000 DHT peers.
"""

from __future__ import annotations

import importlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["WORKLOADS", "Workload", "implementations"]

_rng = random.Random(42)
FROM_ID = b"\x00\x24\x08\x01\x12\x20" + _rng.randbytes(32)
SEQNO = (1_700_000_000_123).to_bytes(8, "big")
DATA = _rng.randbytes(256)
SEEN_KEYS = [_rng.randbytes(8) for _ in range(10_000)]
NEW_KEYS = [os.urandom(8) for _ in range(200_000)]  # fresh ids for insertions; setup rewinds them per run


@dataclass(frozen=True)
class Workload:
    """``stmt`` timed in the namespace ``build(module)`` returns; ``setup`` runs before every timed run."""

    concern: str
    name: str
    build: Callable[[ModuleType], dict[str, Any]]
    stmt: str
    setup: str = "pass"
    max_number: int | None = None  # runs may not exceed this many statements (finite inputs)
    batch: int = 1000  # statements per pytest-benchmark round

    @property
    def key(self) -> str:
        return f"{self.concern}.{self.name}"


def implementations(concern: str) -> dict[str, ModuleType]:
    """{"c": compiled, "py": twin}; ImportError if the compiled module is not built."""
    return {
        "c": importlib.import_module(f"p2p_fast._ext._{concern}_c"),
        "py": importlib.import_module(f"p2p_fast._ext._{concern}_py"),
    }


def _message(m: ModuleType) -> dict[str, Any]:
    from libp2p.pubsub.pb import rpc_pb2

    msg = rpc_pb2.Message(from_id=FROM_ID, seqno=SEQNO, data=DATA, topicIDs=["tasks"], signature=bytes(64))
    return {"f": m.message_id, "msg": msg}


def _seen(m: ModuleType) -> dict[str, Any]:
    cache = m.SeenCache(120)
    for key in SEEN_KEYS:
        cache.add(key)
    return {"cache": cache, "has": cache.has, "add": cache.add, "hit": SEEN_KEYS[1234], "miss": b"\x00" * 8,
            "NEW_KEYS": NEW_KEYS}


def _validation(m: ModuleType) -> dict[str, Any]:
    import time

    from libp2p.pubsub.pubsub import ValidationResult

    cache = m.ValidationCache(300, 1000)
    result = ValidationResult(is_valid=True, timestamp=time.time())
    for key in SEEN_KEYS[:1000]:
        cache.put(key, result)
    return {"get": cache.get, "put": cache.put, "hit": SEEN_KEYS[500], "r": result, "NEW_KEYS": NEW_KEYS}


def _kclosest(m: ModuleType) -> dict[str, Any]:
    index = m.KClosestIndex()
    for _ in range(1000):
        index.add(b"\x00\x24" + _rng.randbytes(36))
    return {"closest": index.closest, "target": _rng.randbytes(32), "xor": m.xor_distance,
            "a": _rng.randbytes(32), "b": _rng.randbytes(32)}


def _framing(m: ModuleType) -> dict[str, Any]:
    frame = m.encode_frame(DATA)
    return {"m": m, "enc": m.encode_uvarint, "dec": m.decode_uvarint, "frame_of": m.encode_frame,
            "decoder": m.FrameDecoder(), "payload": DATA, "frame": frame, "head": frame[:100], "tail": frame[100:],
            "varint": m.encode_uvarint(300_000), "pack": m.pack_yamux_header, "unpack": m.unpack_yamux_header,
            "header": m.pack_yamux_header(0, 2, 3, 256)}


WORKLOADS: list[Workload] = [
    Workload("msgid", "message_id_bytes", lambda m: {"f": m.message_id_bytes, "a": FROM_ID, "b": SEQNO, "c": DATA},
             "f(a, b, c)"),
    Workload("msgid", "message_id", _message, "f(msg)"),
    Workload("seen", "SeenCache.has_hit", _seen, "has(hit)"),
    Workload("seen", "SeenCache.has_miss", _seen, "has(miss)"),
    Workload("seen", "SeenCache.add_new", _seen, "add(next_key())",
             setup="next_key = iter(NEW_KEYS).__next__; cache.clear()", max_number=len(NEW_KEYS)),
    Workload("seen", "ValidationCache.get", _validation, "get(hit)"),
    Workload("seen", "ValidationCache.put_evict", _validation, "put(next_key(), r)",
             setup="next_key = iter(NEW_KEYS).__next__", max_number=len(NEW_KEYS)),
    Workload("kclosest", "closest_20_of_1000", _kclosest, "closest(target, 20)", batch=20),
    Workload("kclosest", "xor_distance", _kclosest, "xor(a, b)"),
    Workload("framing", "encode_uvarint", _framing, "enc(300000)"),
    Workload("framing", "decode_uvarint", _framing, "dec(varint)"),
    Workload("framing", "encode_frame", _framing, "frame_of(payload)"),
    Workload("framing", "FrameDecoder.feed_whole", _framing, "decoder.feed(frame)"),
    Workload("framing", "FrameDecoder.feed_split", _framing, "decoder.feed(head); decoder.feed(tail)"),
    Workload("framing", "pack_yamux_header", _framing, "pack(0, 2, 3, 256)"),
    Workload("framing", "unpack_yamux_header", _framing, "unpack(header)"),
]
