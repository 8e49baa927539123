"""NAT traversal: circuit relay v2 (HOP on the relay role, reservations on unreachable workers), AutoNAT, DCUtR.

Built on what py-libp2p 0.8.1 ships (``libp2p.relay.circuit_v2``, ``libp2p.host.autonat``), configured and, where
py-libp2p is buggy, corrected in small subclasses and wrappers -- each correction documented where it is made and
shown by a test in ``tests/nat/test_libp2p_relay_bugs.py``:

- :mod:`.circuit`  dialing ``/p2p-circuit`` addresses through the ordinary swarm (``host.connect``)
- :mod:`.relay`    the circuit relay protocol (HOP service limits, STOP side)
- :mod:`.autonat`  reachability by dial-back
- :mod:`.dcutr`    hole punching, with counters
- :mod:`.service`  the behaviour tying them to a node: :func:`start_nat_services`
"""

from p2p_fast.protocols.nat.service import NatService, start_nat_services

__all__ = ["NatService", "start_nat_services"]
