"""Coverage-guided fuzzing of our decoders with atheris (libFuzzer), for runs longer than the suite's bounded
hypothesis tests. Not collected by pytest; run by hand (RELIABILITY.md lists the last runs and their figures):

    python tests/fuzz/atheris_decoders.py codec  -max_total_time=120
    python tests/fuzz/atheris_decoders.py frames -max_total_time=120
    python tests/fuzz/atheris_decoders.py config -max_total_time=120

Targets:
- ``codec``: ``decode`` (protobuf parsing plus our checks) raises only ``DecodeError`` with a known reason, and
  whatever decodes encodes and decodes back to the same message;
- ``frames``: the compiled and the pure-Python ``FrameDecoder`` fed the same chunks give the same frames, or both
  fail (a differential test: aiohttp's parser twins once disagreed exactly like this), and never exceed the limit;
- ``config``: ``load_config_text`` answers every text with a config or a ``ConfigError``.
Any other exception is a crash: libFuzzer stops and writes the input to ``crash-*``.
"""

from __future__ import annotations

import importlib
import sys

import atheris

# Coverage for libFuzzer: our modules (and PyYAML, under the config target) are instrumented as they are imported;
# without ``include`` atheris instrumented nothing of ours.
with atheris.instrument_imports(include=["p2p_fast", "yaml"]):
    from p2p_fast.core.config import ConfigError, load_config_text
    from p2p_fast.protocols import messages  # noqa: F401 - registers the message classes
    from p2p_fast.protocols.codec import DecodeError, decode, encode
    from p2p_fast.protocols.codec_errors import REASONS

    _py = importlib.import_module("p2p_fast._ext._framing_py")
try:
    _c = importlib.import_module("p2p_fast._ext._framing_c")
except ImportError:
    _c = None



def fuzz_codec(data: bytes) -> None:
    try:
        msg = decode(data)
    except DecodeError as exc:
        if exc.reason not in REASONS:
            raise AssertionError(f"unknown reason {exc.reason}") from None
        return
    again = decode(encode(msg))
    if repr(again) != repr(msg):  # repr: NaN fields compare unequal to themselves
        raise AssertionError(f"decoded message does not survive a round trip: {msg!r} != {again!r}")


def _run(mod, limit: int, chunks: list[bytes]) -> tuple[list[bytes], bool]:
    dec = mod.FrameDecoder(limit)
    out: list[bytes] = []
    for chunk in chunks:
        try:
            out.extend(dec.feed(chunk))
        except mod.FrameError as exc:
            out.extend(getattr(exc, "frames", None) or [])
            return out, True
    return out, False


def fuzz_frames(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limit = fdp.ConsumeIntInRange(0, 4096)
    chunks = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) for _ in range(fdp.ConsumeIntInRange(0, 16))]
    py = _run(_py, limit, chunks)
    if any(len(f) > limit for f in py[0]):
        raise AssertionError("a frame over the limit")
    if _c is not None:
        c = _run(_c, limit, chunks)
        if c != py:
            raise AssertionError(f"compiled and Python decoders disagree: {c!r} != {py!r}")


def fuzz_config(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    try:
        load_config_text(text, "fuzz.yaml")
    except ConfigError:
        pass


TARGETS = {"codec": fuzz_codec, "frames": fuzz_frames, "config": fuzz_config}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
