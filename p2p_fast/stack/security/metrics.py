"""Prometheus counters of the security checks (default registry; served at ``/metrics`` with the node's own).

Refused messages are counted where every other refusal is, ``p2p_messages_rejected_total{topic, reason}``: on the
task protocol with ``not-allowed`` and ``rate-limited``, on gossip topics with ``unsigned``, ``wrong-sender`` and
``bad-signature``. The counters here are for what has no topic."""

from __future__ import annotations

from prometheus_client import Counter

API_UNAUTHORIZED = Counter("p2p_api_unauthorized_total", "HTTP requests refused for a missing or wrong bearer token",
                           ["reason"])
HANDSHAKE_FAILURES = Counter("p2p_handshake_failures_total",
                             "Outbound connections whose security handshake failed (psk-mismatch: we are in a "
                             "private network and the peer is not, or has another key)", ["reason"])
