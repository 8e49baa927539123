"""Fixtures for the go-libp2p interop tests: the p2pd binary (skip, with the reason, when it cannot be had)."""

from __future__ import annotations

import pytest

from testing.interop import P2PDUnavailable, ensure_p2pd


@pytest.fixture(scope="session")
def p2pd_binary() -> str:
    """Path of the go-libp2p daemon; fetched by scripts/fetch-p2pd.sh if missing. Skips when unavailable."""
    try:
        return ensure_p2pd()
    except P2PDUnavailable as exc:
        pytest.skip(f"go-libp2p daemon (p2pd) unavailable: {exc}")
