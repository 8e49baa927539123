"""Interop harness: drive go-libp2p peers (the ``p2pd`` daemon) from Python tests. See :mod:`.p2pd`."""

from .p2pd import (
    AsyncP2PDaemon,
    AsyncSubscription,
    ControlError,
    P2PDaemon,
    P2PDaemonError,
    P2PDUnavailable,
    PeerInfo,
    PubsubMessage,
    Subscription,
    ensure_p2pd,
    find_p2pd,
)

__all__ = [
    "AsyncP2PDaemon",
    "AsyncSubscription",
    "ControlError",
    "P2PDaemon",
    "P2PDaemonError",
    "P2PDUnavailable",
    "PeerInfo",
    "PubsubMessage",
    "Subscription",
    "ensure_p2pd",
    "find_p2pd",
]
