"""Which node ``p2p-ctl`` talks to, with which token, and the HTTP calls themselves: errors come back as
:class:`CtlError` with the exit code to use (1: the node answered an error, 2: bad usage or no node)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import httpx

from p2p_fast.app.api.token import ENV as TOKEN_ENV

DEFAULT_API = "http://127.0.0.1:8080"


class CtlError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def resolve_api(args: argparse.Namespace) -> str:
    if args.api:
        return str(args.api).rstrip("/")
    if args.data_dir:
        path = Path(args.data_dir) / "node.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CtlError(f"cannot read {path}: {exc} (is a node running on that data dir?)", 2) from None
        return str(doc["http"]).replace("://0.0.0.0:", "://127.0.0.1:")
    return os.environ.get("P2P_API", DEFAULT_API).rstrip("/")


def resolve_token(args: argparse.Namespace) -> str | None:
    """The API token to send: ``--token-file``, else ``$P2P_API_TOKEN`` (the variable the node reads), else none."""
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise CtlError(f"cannot read --token-file {args.token_file}: {exc.strerror or exc}", 2) from None
        if not token:
            raise CtlError(f"--token-file {args.token_file} is empty", 2)
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


class Client:
    def __init__(self, base: str, timeout: float = 30, token: str | None = None) -> None:
        self.base = base
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.has_token = bool(token)
        self.http = httpx.Client(base_url=base, timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CtlError(f"cannot reach the node at {self.base}: {exc}", 2) from None
        try:
            doc = r.json()
        except ValueError:
            doc = {"error": r.text.strip()}
        if r.status_code >= 400:
            detail = doc.get("detail") if isinstance(doc, dict) else None
            msg = doc.get("error", r.text) if isinstance(doc, dict) else r.text
            hint = ""
            if r.status_code == 401:
                hint = (" (pass the node's token with --token-file FILE or P2P_API_TOKEN)" if not self.has_token
                        else " (the token given with --token-file or P2P_API_TOKEN is not the node's)")
            raise CtlError(f"{r.status_code}: {msg}" + (f" {json.dumps(detail)}" if detail else "") + hint)
        return doc
