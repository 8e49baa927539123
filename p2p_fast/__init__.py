"""p2p-fast: a peer-to-peer compute network on py-libp2p.

Importing it changes nothing of py-libp2p: the patches are applied when a host is built
(:func:`p2p_fast.stack.patches.apply_all`), and the entry points prepare lean imports first
(:func:`p2p_fast.stack.patches.prepare_imports`).
"""

__version__ = "0.1.0"
