"""p2p-fast: a peer-to-peer compute network on py-libp2p."""

from p2p_fast.stack.patches.lean_imports import install as _install_lean_imports

__version__ = "0.1.0"
_install_lean_imports()  # before anything imports py-libp2p: see lean_imports
