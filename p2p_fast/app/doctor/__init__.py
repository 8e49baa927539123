"""``p2p-node doctor --config FILE``: the troubleshooting steps of a bootstrap or discovery problem, run as checks.

Each check is one function that returns :class:`Check` results (``ok``, ``problem`` or ``skipped``) with what it saw
and, for a problem, what to do. The order follows what a failing node needs first: a valid config, a free port, the
bootstrap addresses (resolved with the system resolver, so search domains apply, and dialed with a throw-away
libp2p host: TCP, PSK + security handshake, protocol version through Identify), the relays, mDNS, and on a node
already running on this config's data dir (or ``--api``) its gossip topics, mesh sizes and the peers' clock skew.
Exit code 0 when nothing is a problem, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

from p2p_fast.app.doctor.report import Check, main

__all__ = ["Check", "main"]
