"""A small keep-alive JSON-over-HTTP connection for the client (standard library: nothing to install, ~40 µs a call).

One :class:`Http` per thread, or handed from one thread to another, never used by two at once: ``http.client``
connections are not thread-safe. A request on a kept-alive connection the node closed meanwhile is retried once on
a fresh one only when it is safe to repeat (``idempotent``). ``send`` and ``receive`` split a request in two: the
client's caller thread writes a lone submission, the sender thread reads its answer (``client._core``).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TOKEN_ENV = "P2P_API_TOKEN"
DEFAULT_API = "http://127.0.0.1:8080"


class NodeError(Exception):
    """The node answered with an error (``status`` is the HTTP code) or could not be reached (``status`` 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def resolve_api(api: str | None, data_dir: str | os.PathLike[str] | None) -> str:
    """``api`` as given, else the address in ``<data_dir>/node.json``, else ``$P2P_API``, else 127.0.0.1:8080."""
    if api:
        return api.rstrip("/")
    if data_dir is not None:
        path = Path(data_dir) / "node.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise NodeError(f"cannot read {path}: {exc} (is a node running on that data dir?)") from None
        return str(doc["http"]).replace("://0.0.0.0:", "://127.0.0.1:").rstrip("/")
    return os.environ.get("P2P_API", DEFAULT_API).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    if token:
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


@dataclass
class Sent:
    """A request written on an :class:`Http` connection, its answer not read yet."""

    method: str
    path: str
    data: bytes | None
    headers: dict[str, str]
    timeout: float | None
    fresh: bool = True  # written on a new connection (a failure then is not a stale keep-alive one)
    error: BaseException | None = None  # the write failed


class Http:
    def __init__(self, base: str, token: str | None, timeout: float = 30.0) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"api must be an http(s) URL like http://127.0.0.1:8080, got {base!r}")
        self.base = base
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=timeout)
            self._conn.connect()
            if self._conn.sock is not None:
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        elif self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    @property
    def connected(self) -> bool:
        """A connection is open (a request written now needs no connect first)."""
        return self._conn is not None and self._conn.sock is not None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                timeout: float | None = None, idempotent: bool = False) -> Any:
        """The JSON answer of a 2xx; :class:`NodeError` with the node's own error text otherwise."""
        return self.receive(self.send(method, path, body, raw=raw, timeout=timeout), idempotent=idempotent)

    def send(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             timeout: float | None = None) -> Sent:
        """Write a request and return at once; :meth:`receive` reads its answer (from any thread, never at the same
        time as another call on this connection). A failed write is kept for ``receive`` to retry or report."""
        data = raw if raw is not None else (json.dumps(body, separators=(",", ":")).encode()
                                            if body is not None else None)
        headers = self.headers if raw is None else {**self.headers, "Content-Type": "application/octet-stream"}
        return self._write(Sent(method, path, data, headers, timeout))

    def _write(self, sent: Sent) -> Sent:
        sent.fresh = self._conn is None
        sent.error = None
        try:
            conn = self._connection(sent.timeout or self.timeout)
            conn.request(sent.method, self.prefix + sent.path, body=sent.data, headers=sent.headers)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            sent.error = exc
        return sent

    def receive(self, sent: Sent, *, idempotent: bool = False) -> Any:
        """The answer to ``sent``. A request on a kept-alive connection the node closed meanwhile is sent once
        more on a fresh one when that is safe (``idempotent``, or the node hung up before reading it)."""
        for attempt in (0, 1):
            exc = sent.error if sent.error is not None or self._conn is not None else ConnectionError("closed")
            if exc is None and self._conn is not None:
                try:
                    resp = self._conn.getresponse()
                    payload = resp.read()
                    status = resp.status
                    if resp.getheader("connection", "").lower() == "close":
                        self.close()
                    break
                except (OSError, http.client.HTTPException) as err:
                    self.close()
                    exc = err
            if attempt == 0 and not sent.fresh and (idempotent or isinstance(exc, (http.client.RemoteDisconnected,
                                                                                   BrokenPipeError))):
                sent = self._write(sent)  # a kept-alive connection the node had closed: once more on a new one
                continue
            raise NodeError(f"cannot reach the node at {self.base}: {type(exc).__name__}: {exc}") from None
        try:
            doc = json.loads(payload) if payload else None
        except ValueError:
            doc = None
        if not 200 <= status < 300:
            what = doc.get("error") if isinstance(doc, dict) else payload[:200].decode(errors="replace")
            detail = doc.get("detail") if isinstance(doc, dict) else None
            raise NodeError(f"{sent.method} {sent.path}: HTTP {status}: {what}" + (f" ({detail})" if detail else ""),
                            status)
        return doc
