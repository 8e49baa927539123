"""Leaf utilities every layer may use: configuration, logging, metrics, the event bus, multiaddr and interface helpers.

Nothing here imports from ``stack``, ``protocols`` or ``app``."""
