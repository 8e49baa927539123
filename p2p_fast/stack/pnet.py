"""Private networks: a pre-shared key (the go-libp2p ``swarm.key`` format) that every connection is wrapped in.

A node without the key cannot complete even the first handshake with a node that has it. The key file holds either
the three-line ``swarm.key`` format (``/key/swarm/psk/1.0.0/``, ``/base16/``, 64 hex digits) or just the 64 hex
digits; ``P2P_PSK`` in the environment overrides ``network.psk_file``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from p2p_fast.core.config import Config, ConfigError

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_psk(text: str, source: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) == 3 and lines[0] == "/key/swarm/psk/1.0.0/" and lines[1] == "/base16/":
        lines = lines[2:]
    if len(lines) != 1 or not _HEX64.match(lines[0]):
        raise ConfigError(source, "network.psk_file",
                          "must hold a swarm.key (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits) or 64 hex digits")
    return lines[0].lower()


def load_psk(cfg: Config) -> str | None:
    env = os.environ.get("P2P_PSK")
    if env:
        return parse_psk(env, "environment P2P_PSK")
    if not cfg.network.psk_file:
        return None
    try:
        with open(cfg.network.psk_file, encoding="utf-8") as fh:
            return parse_psk(fh.read(), cfg.network.psk_file)
    except OSError as exc:
        raise ConfigError(cfg.source, "network.psk_file", f"cannot read {cfg.network.psk_file}: {exc.strerror}") from None


def protect_raw_conn(raw: Any, psk: Any) -> Any:
    """Wrap a raw connection we opened ourselves exactly as the swarm wraps its own."""
    if not psk:
        return raw
    from libp2p.security.pnet.protector import new_protected_conn

    return new_protected_conn(raw, psk)
