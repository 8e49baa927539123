"""p2p-fast: a peer-to-peer compute network on py-libp2p."""

__version__ = "0.1.0"
