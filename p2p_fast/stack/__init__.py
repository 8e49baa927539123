"""The libp2p stack as this project runs it: host construction, identity, Yamux, TCP, the private-network PSK, the
DHT, GossipSub set-up, the connection manager and load shedding.

Every change to py-libp2p's own behaviour lives in :mod:`p2p_fast.stack.patches`. Imports only ``core`` and ``_ext``.
"""
