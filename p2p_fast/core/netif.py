"""The machine's IPv4 addresses (to advertise concrete addresses when we listen on 0.0.0.0), and whether a TCP port
can be bound (the node before it starts, the doctor when it checks)."""

from __future__ import annotations

import fcntl
import socket
import struct

_SIOCGIFADDR = 0x8915


def ipv4_addresses(include_loopback: bool = True) -> list[str]:
    out: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # interface without an IPv4 address
            ip = socket.inet_ntoa(packed[20:24])
            if ip.startswith("127.") and not include_loopback:
                continue
            out.append(ip)
    return out


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound for listening now (``errno.EADDRINUSE``: another process holds it), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc
    return None
