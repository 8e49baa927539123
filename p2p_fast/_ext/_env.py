"""Decide once, at import time, whether the compiled hot paths may be used.

``P2P_FAST_NO_EXTENSIONS`` set to anything but ``""`` or ``"0"`` forces the pure-Python twins, and so does any
interpreter other than CPython (the ``.so`` files are CPython extension modules).
"""

from __future__ import annotations

import os
import sys

__all__ = ["NO_EXTENSIONS"]


def _no_extensions() -> bool:
    if sys.implementation.name != "cpython":
        return True
    return os.environ.get("P2P_FAST_NO_EXTENSIONS", "") not in ("", "0")


NO_EXTENSIONS: bool = _no_extensions()
