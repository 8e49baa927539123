"""Test harnesses (network-namespace test bed, go-libp2p daemon interop). Used by ``tests/``, ``bench/`` and
``stress/``; not part of the installed package."""
