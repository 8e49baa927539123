"""Our protocols on top of libp2p: the wire codec and message types, presence (capability adverts), health (liveness
pings), discovery (bootstrap, connector), NAT traversal (AutoNAT, relay, DCUtR) and tasks.

Imports ``stack`` and ``core``, never ``app``."""
