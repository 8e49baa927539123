"""``p2p-ctl``'s command line: the argument parser and ``main`` (exit codes: 0 success; 1 a task failed or the node
answered an error; 2 bad usage or the node cannot be reached)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from p2p_fast.app.api.token import ENV as TOKEN_ENV
from p2p_fast.app.ctl.client import DEFAULT_API, Client, CtlError, resolve_api, resolve_token
from p2p_fast.app.ctl.commands import COMMANDS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="p2p-ctl", description="Control a running p2p-fast node through its HTTP API.")
    p.add_argument("--api", help=f"the node's API URL (default $P2P_API or {DEFAULT_API})")
    p.add_argument("--data-dir", help="find the API of the node running on this data dir")
    p.add_argument("--token-file", help=f"file holding the API's bearer token (default ${TOKEN_ENV}, if set)")
    p.add_argument("--json", action="store_true", help="print JSON (also accepted after the command)")
    # --json after the command too; SUPPRESS keeps a --json given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    add("status", help="node status, task counts, ledger")
    add("peers", help="connected peers")
    s = add("submit", help="submit a task (or --count of them) and wait for the result(s)")
    s.add_argument("type")
    s.add_argument("payload", nargs="*", default=[], help="words, or - (stdin) or @FILE: the bytes as they are")
    s.add_argument("-o", "--output", help="write the raw result of one task to this file (- for stdout)")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--timeout", type=float, help="per-attempt timeout, s")
    s.add_argument("--retries", type=int, help="max retries")
    s.add_argument("--reward", type=int)
    s.add_argument("--redundancy", type=int, help="run on this many distinct workers; the majority result is accepted")
    s.add_argument("--no-wait", dest="wait", action="store_false", help="print the id(s) and return")
    s.add_argument("--wait-timeout", type=float, default=600)
    w = add("watch", help="wait for tasks, with a progress bar")
    w.add_argument("ids", nargs="+")
    w.add_argument("--wait-timeout", type=float, default=600)
    c = add("cancel", help="cancel pending or running tasks")
    c.add_argument("ids", nargs="+")
    add("capabilities", help="this node's capabilities and which live peers offer each")
    gs = add("gossip", help="broadcast a text to every node; without one, list the recent ones")
    gs.add_argument("text", nargs="*", default=[], help="words, or - (stdin) or @FILE")
    gs.add_argument("--limit", type=int, default=20)
    g = add("get", help="one task as JSON")
    g.add_argument("id")
    t = add("tasks", help="list tasks")
    t.add_argument("--state", choices=["pending", "running", "completed", "failed", "cancelled"])
    t.add_argument("--limit", type=int, default=50)
    lg = add("ledger", help="balance, reputation, receipts")
    lg.add_argument("--verify", action="store_true", help="re-check every receipt signature")
    lg.add_argument("--limit", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "count", 1) < 1:
        print("p2p-ctl: --count must be at least 1", file=sys.stderr)
        return 2
    try:
        client = Client(resolve_api(args), token=resolve_token(args))
        try:
            return COMMANDS[args.command](client, args)
        finally:
            client.close()
    except CtlError as exc:
        print(f"p2p-ctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
