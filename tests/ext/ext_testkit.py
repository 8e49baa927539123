"""Helpers shared by the hot-path tests (imported by name: ``conftest`` puts this directory on ``sys.path``)."""

from __future__ import annotations

import importlib
from types import ModuleType

from p2p_fast._ext import NO_EXTENSIONS

CONCERNS = ("msgid", "seen", "kclosest", "framing")


def compiled_module(concern: str) -> ModuleType | None:
    """The compiled module of ``concern``, or None in no-extensions mode or when it is not built."""
    if NO_EXTENSIONS:
        return None
    try:
        return importlib.import_module(f"p2p_fast._ext._{concern}_c")
    except ImportError:
        return None


def twin_module(concern: str) -> ModuleType:
    return importlib.import_module(f"p2p_fast._ext._{concern}_py")


def skip_reason(concern: str) -> str:
    if NO_EXTENSIONS:
        return "running in no-extensions mode (P2P_FAST_NO_EXTENSIONS)"
    return f"p2p_fast._ext._{concern}_c is not built"


class FakeClock:
    """An injectable clock: ``clock()`` returns ``clock.now``; tests move time by assigning or ``advance``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def outcome(fn, *args):
    """("ok", result) or (exception type, message): compares two implementations on the same call."""
    try:
        return ("ok", fn(*args))
    except (TypeError, ValueError) as exc:  # FrameError is a ValueError
        return (type(exc), str(exc))
