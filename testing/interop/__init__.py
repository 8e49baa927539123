"""Interop harness: drive go-libp2p peers (the ``p2pd`` daemon) from Python tests. See :mod:`.p2pd`."""

from testing.interop.p2pd import *  # noqa: F403  (the public names are p2pd's __all__)
from testing.interop.p2pd import __all__  # noqa: F401
