"""Logging set-up: human-readable text or one JSON object per line (``--log-format json``) for log shippers."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class _AtLeast(logging.Filter):
    """Drops records of the ``prefix`` loggers below ``level``: a module that sets its own logger's level (py-libp2p's
    auto-connector logs at INFO) must not bypass the level chosen for the whole library."""

    def __init__(self, prefix: str, level: int) -> None:
        super().__init__()
        self.prefix, self.level = prefix, level

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == self.prefix or record.name.startswith(self.prefix + ".")
        return not ours or record.levelno >= self.level


def setup_logging(level: str = "info", fmt: str = "text", filters: Sequence[logging.Filter] = ()) -> None:
    """Every record, ours and py-libp2p's, through one handler in one format.

    Call it after py-libp2p is imported: its import (``libp2p.utils.logging``) clears the ``libp2p`` logger's
    handlers and cuts it off from the root unless ``LIBP2P_DEBUG`` is set, so its warnings went to Python's
    last-resort handler as bare text, without time or level, and broke ``--log-format json``. ``filters`` are added
    to the handler (they see every logger's records)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    libp2p_level = logging.DEBUG if level == "debug" else logging.WARNING
    handler.addFilter(_AtLeast("libp2p", libp2p_level))
    for flt in filters:
        handler.addFilter(flt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # Our own loggers follow --log-level; py-libp2p is noisy at info and only follows at debug.
    logging.getLogger("p2p_fast").setLevel(level.upper())
    libp2p = logging.getLogger("libp2p")
    libp2p.setLevel(libp2p_level)
    libp2p.handlers.clear()
    libp2p.propagate = True
