"""What must hold before a node starts, and the errors that say why it cannot: its data dir is its own (an exclusive
lock: two nodes sharing one identity would confuse everybody) and its listen port is free."""

from __future__ import annotations

import errno
import fcntl
import os

from p2p_fast.core.netif import bind_error


class NodeStartError(RuntimeError):
    """The node cannot start for a reason the user can fix (port in use, data dir locked, ...)."""


class NodeFailed(NodeStartError):
    """The node stopped because it could not go on safely (its journal cannot be written); says why."""


class DataDirLock:
    """An exclusive lock on the data dir: two nodes sharing one identity would confuse everybody."""

    def __init__(self, data_dir: os.PathLike[str] | str) -> None:
        self.path = os.path.join(data_dir, "node.lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise NodeStartError(f"data dir {os.path.dirname(self.path)} is not usable: {exc.strerror}; "
                                 "give the node a writable --data-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise NodeStartError(
                f"data dir {os.path.dirname(self.path)} is in use by another p2p-node (pid {other}); "
                "give this one its own --data-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`NodeStartError` naming the fix when ``host:port`` cannot be listened on (0: any port, fine)."""
    if port == 0:
        return
    exc = bind_error(host, port)
    if exc is None:
        return
    if exc.errno == errno.EADDRINUSE:
        raise NodeStartError(f"listen port {port} on {host} is already in use; stop the other process or use "
                             "--listen-port 0 to pick a free port")
    raise NodeStartError(f"cannot listen on {host}:{port}: {exc.strerror}")
