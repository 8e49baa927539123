"""The HTTP API's bearer token: where it comes from and the middleware that asks for it.

The token is read once at start-up from ``P2P_API_TOKEN`` or the file named by ``http.token_file`` (surrounding
whitespace stripped). With a token, every request needs ``Authorization: Bearer <token>``, compared in constant time
(``hmac.compare_digest``), except ``/healthz`` and ``/readyz`` (probes carry no secrets) and, while
``http.metrics_public`` is true, ``/metrics``; and the dashboard's static files (``/ui``, ``/ui/*``), which hold no
data: the page asks for the token and sends it on every API call. A refusal is ``401`` with a JSON error and ``WWW-Authenticate:
Bearer``. The token itself is never logged, and never echoed in an error.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from typing import Any

from p2p_fast.stack.security import metrics
from p2p_fast.core.config import Config, ConfigError

log = logging.getLogger(__name__)
ENV = "P2P_API_TOKEN"
MIN_LENGTH = 16
ALWAYS_OPEN = frozenset({"/healthz", "/readyz", "/ui"})
# The dashboard's static files: the same for everybody, no data in them; the page asks for the token itself.
OPEN_PREFIXES = ("/ui/",)


def load_api_token(cfg: Config) -> str | None:
    """The configured token, or None when the API is open. A token file that cannot be read, is empty or is
    shorter than ``MIN_LENGTH`` characters stops start-up with a :class:`ConfigError`."""
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        token, source = env.strip(), f"environment {ENV}"
    elif cfg.http.token_file:
        try:
            with open(cfg.http.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(cfg.source, "http.token_file", f"cannot read {cfg.http.token_file}: {why}") from None
        source = cfg.http.token_file
    else:
        return None
    if len(token) < MIN_LENGTH or any(c.isspace() for c in token):
        where = "http.token_file" if source == cfg.http.token_file else ""
        raise ConfigError(cfg.source if where else source, where,
                          f"the API token must be at least {MIN_LENGTH} characters with no spaces "
                          f"(e.g. `openssl rand -hex 32`)")
    return token


def token_matches(expected: bytes, credential: bytes) -> bool:
    """Whether ``credential`` is the token, compared in constant time (HTTP's bearer header and the task lane's
    hello both ask this)."""
    return hmac.compare_digest(credential.strip(), expected)


def refused(has_credential: bool, ask: str = "`Authorization: Bearer <token>`") -> str:
    """Why a request without the right token is refused (the token itself is never named); counted by cause.
    ``ask``: where the token goes in this kind of request."""
    metrics.API_UNAUTHORIZED.labels("bad-token" if has_credential else "no-token").inc()
    return f"this API needs {ask} (http.token_file or {ENV} on the node)" if not has_credential else "wrong token"


class BearerAuth:
    """ASGI middleware: 401 for HTTP requests without the right bearer token (see the module doc)."""

    def __init__(self, app: Any, token: str, metrics_public: bool = True) -> None:
        self.app = app
        self._expected = token.encode()
        self.open_paths = ALWAYS_OPEN | ({"/metrics"} if metrics_public else set())

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                return token_matches(self._expected, credential)
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        path = scope.get("path") or ""
        if kind not in ("http", "websocket") or path in self.open_paths or path.startswith(OPEN_PREFIXES) \
                or self.authorized(scope["headers"]):
            await self.app(scope, receive, send)  # lifespan events, probes, and requests with the token
            return
        has_header = any(name == b"authorization" for name, _ in scope["headers"])
        detail = refused(has_header)
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        body = json.dumps({"error": "unauthorized", "detail": detail}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="p2p-fast"'),
                                # The request body is left unread: close, so a keep-alive client does not send its
                                # next request into a connection the server is about to drop.
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
