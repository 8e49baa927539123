"""Shut down one HTTP connection of this process by its addresses, under the server that owns it.

Why: ASGI has no way for an application to drop its connection, and hypercorn shields its socket writes from
cancellation, so a streaming response to a client that stopped reading blocks until the client reads or goes away.
The event stream (``api.events``) uses this to hang up on a subscriber it dropped. ``shutdown`` acts on the
connection, not on a descriptor: done on a duplicate, the server's own descriptor stays valid, its pending write
fails (``EPIPE``) and it closes the connection its usual way. Linger 0 first (an option of the socket, shared by
both descriptors): that close then resets the connection and drops the unsent bytes, instead of leaving the kernel
to push them, behind a FIN, at a client that does not read. Linux only (``/proc/self/fd``); elsewhere it returns
False and the connection stays until the client goes.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from typing import Any

FD_DIR = "/proc/self/fd"


def _same(addr: Any, want: Any) -> bool:
    return want is not None and tuple(addr[:2]) == (want[0], int(want[1]))


def shutdown_connection(client: Any, server: Any) -> bool:
    """Shut down the TCP connection from ``client`` to ``server`` ((host, port) pairs as in an ASGI scope)."""
    if client is None or server is None:
        return False
    try:
        names = os.listdir(FD_DIR)
    except OSError:
        return False
    for name in names:
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except (ValueError, OSError):
            continue
        try:
            if sock.type == socket.SOCK_STREAM and _same(sock.getpeername(), client) \
                    and _same(sock.getsockname(), server):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
                return True
        except OSError:
            pass
        finally:
            sock.close()
    return False
