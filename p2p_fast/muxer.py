"""Stream multiplexer selection. Yamux, through py-libp2p's ``muxer_opt`` hook so our own Yamux subclass (batched
window updates, see the hot-path work) can be dropped in without touching the host set-up."""

from __future__ import annotations

from typing import Any

from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux


def muxer_options() -> dict[Any, Any]:
    return {YAMUX_PROTOCOL_ID: Yamux}
