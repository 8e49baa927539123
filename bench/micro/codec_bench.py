#!/usr/bin/env python3
"""Encode and decode cost of our wire messages (the codec is on the hot path of every task frame and gossip message).

    .venv/bin/python bench/micro/codec_bench.py                    # this tree's codec, µs per message
    .venv/bin/python bench/micro/codec_bench.py --against fe77fe4  # and the codec of that git revision, alternating

With ``--against``, the other revision's ``codec.py`` and ``messages.py`` are loaded from git into private modules,
and both codecs are timed in alternating rounds in this one process, so machine load hits both alike; the figure is
the median over rounds, and ``old/new`` > 1 means this tree is faster. Messages: what the hot paths send -- a task
request with a 64-byte payload, its response with a 64-byte result, a receipt, and a capability advertisement.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import timeit
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def samples(m: Any) -> dict[str, Any]:
    """The benchmark messages, built with the message classes of module ``m``."""
    peer = "12D3KooWQxyz" + "A" * 40
    return {
        "TaskRequest": m.TaskRequest("a" * 32, "echo", b"p" * 64, peer, 1, 1, 30.0, 3, 1765000000.5),
        "TaskResponse": m.TaskResponse("a" * 32, 1, peer, 0, "", b"r" * 64, "d" * 64, 0.0123),
        "TaskReceipt": m.TaskReceipt("a" * 32, 1, peer, peer, 1, "d" * 64, 1765000000.5, b"s" * 64),
        "CapabilityAdvertisement": m.CapabilityAdvertisement(
            peer, "worker", ["compute", "storage"], 4, 2, 0, 0.25, ["/ip4/10.0.0.1/tcp/4001"], 12, 90.0,
            1765000000.5),
    }


def load_revision(rev: str) -> tuple[Any, Any]:
    """codec and messages of git revision ``rev`` as private modules (their imports of each other rewired)."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True,
                              text=True).stdout

    codec = types.ModuleType("_bench_old_codec")
    exec(compile(show("p2p_fast/protocols/codec.py"), "old codec.py", "exec"), codec.__dict__)
    sys.modules[codec.__name__] = codec
    messages = types.ModuleType("_bench_old_messages")
    src = show("p2p_fast/protocols/messages.py").replace("p2p_fast.protocols.codec", codec.__name__)
    sys.modules[messages.__name__] = messages
    exec(compile(src, "old messages.py", "exec"), messages.__dict__)
    return codec, messages


def per_message_us(codec: Any, msg: Any, number: int) -> tuple[float, float]:
    data = codec.encode(msg)
    enc = min(timeit.repeat(lambda: codec.encode(msg), number=number, repeat=3)) / number * 1e6
    dec = min(timeit.repeat(lambda: codec.decode(data), number=number, repeat=3)) / number * 1e6
    return enc, dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", help="a git revision whose codec to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--number", type=int, default=5000)
    args = ap.parse_args()
    from p2p_fast.protocols import codec, messages

    stacks = {"new": (codec, samples(messages))}
    if args.against:
        old_codec, old_messages = load_revision(args.against)
        stacks["old"] = (old_codec, samples(old_messages))
    results: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, (cod, msgs) in stacks.items():
            for kind, msg in msgs.items():
                enc, dec = per_message_us(cod, msg, args.number)
                results.setdefault((name, kind, "encode"), []).append(enc)
                results.setdefault((name, kind, "decode"), []).append(dec)
    print(f"{'message':<26}{'op':<8}" + "".join(f"{n + ' µs':>12}" for n in stacks)
          + ("  old/new  (medians of rounds; [new range] [old range])" if args.against
             else "  (median of rounds; [range])"))
    for kind in stacks["new"][1]:
        for op in ("encode", "decode"):
            new = results[("new", kind, op)]
            line = f"{kind:<26}{op:<8}" + "".join(f"{statistics.median(results[(n, kind, op)]):>12.2f}" for n in stacks)
            if args.against:
                old = results[("old", kind, op)]
                line += f"  {statistics.median(old) / statistics.median(new):>6.2f}x"
            line += f"  [{min(new):.2f}-{max(new):.2f}]"
            if args.against:
                line += f" [{min(old):.2f}-{max(old):.2f}]"
            print(line)
        sizes = {n: len(cod.encode(msgs[kind])) for n, (cod, msgs) in stacks.items()}
        print(f"{kind:<26}{'bytes':<8}" + "".join(f"{sizes[n]:>12}" for n in stacks))


if __name__ == "__main__":
    main()
