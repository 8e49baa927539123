"""Build the Cython hot paths under ``p2p_fast/_ext``.

Every ``*.pyx`` there is compiled. A build without Cython or a C compiler still installs: the pure-Python twins
(``*_py.py``) serve, exactly as when ``P2P_FAST_NO_EXTENSIONS=1`` is set. Set ``P2P_FAST_REQUIRE_EXTENSIONS=1`` to
make a failed compile an error instead (``./test.sh`` does, so CI proves the compiled path).
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


def _extensions():
    if os.environ.get("P2P_FAST_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if os.environ.get("P2P_FAST_REQUIRE_EXTENSIONS"):
            raise
        print("p2p-fast: Cython not available, installing the pure-Python twins only", file=sys.stderr)
        return []
    sources = sorted(glob.glob(os.path.join("p2p_fast", "_ext", "*.pyx")))
    return cythonize(
        sources,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )


class OptionalBuildExt(build_ext):
    """Let a failed compile fall back to the twins unless extensions are required."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # pragma: no cover - depends on the machine
            if os.environ.get("P2P_FAST_REQUIRE_EXTENSIONS"):
                raise
            print(f"p2p-fast: extensions not built ({exc}); the pure-Python twins will serve", file=sys.stderr)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # pragma: no cover
            if os.environ.get("P2P_FAST_REQUIRE_EXTENSIONS"):
                raise
            print(f"p2p-fast: {ext.name} not built ({exc})", file=sys.stderr)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
