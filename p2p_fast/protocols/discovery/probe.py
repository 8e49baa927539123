"""Learn the peer ID behind a bare address (``/dns4/name/tcp/4001`` without ``/p2p/<id>``).

py-libp2p can only dial a known peer ID (it appends ``/p2p/<id>`` to every dial). The security handshake, though,
authenticates the responder's key whatever we expected, so we open a raw connection, run the Noise handshake with no
expected ID, read the ID it proves, and close. The real dial that follows is an ordinary, verified one.
"""

from __future__ import annotations

import multiaddr
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.security_multistream import SecurityMultistream

from p2p_fast.stack.pnet import protect_raw_conn


class ProbeError(RuntimeError):
    pass


async def probe_peer_id(host: IHost, addr: multiaddr.Multiaddr) -> ID:
    network = host.get_network()
    transport = network.transport_manager.transport_for_dialing(addr)  # type: ignore[attr-defined]
    if transport is None:
        raise ProbeError(f"no transport can dial {addr}")
    security = network.upgrader.security_multistream  # type: ignore[attr-defined]
    if NOISE_PROTOCOL_ID not in security.transports:
        raise ProbeError("learning a peer ID needs Noise enabled (network.security); give /p2p/<id> instead")
    try:
        raw = await transport.dial(addr)
    except Exception as exc:
        raise ProbeError(f"cannot connect to {addr}: {exc}") from None
    raw = protect_raw_conn(raw, getattr(network, "psk", None))
    secured = None
    try:
        # Negotiate Noise only (py-libp2p's Noise accepts "no expected ID"; its TLS does not).
        noise_only = SecurityMultistream({NOISE_PROTOCOL_ID: security.transports[NOISE_PROTOCOL_ID]})
        secured = await noise_only.secure_outbound(raw, None)  # type: ignore[arg-type]
        return secured.get_remote_peer()
    except Exception as exc:
        raise ProbeError(f"handshake with {addr} failed: {exc}") from None
    finally:
        try:
            await (secured or raw).close()
        except Exception:
            pass
