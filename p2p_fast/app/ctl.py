"""``p2p-ctl``: talk to a running node's HTTP API — status, peers, submit, watch, cancel, tasks, ledger, gossip.

Which node: ``--api URL``, else ``--data-dir DIR`` (reads the node's ``node.json``), else ``$P2P_API``, else
http://127.0.0.1:8080. A node with an API token (``http.token_file``) needs it here too: ``--token-file FILE``, else
``$P2P_API_TOKEN``. Exit codes: 0 success; 1 a task failed or the node answered an error; 2 bad usage or the node
cannot be reached.

    p2p-ctl status
    p2p-ctl submit compute test_payload            # waits and prints the result
    p2p-ctl submit echo hello --count 1000         # a batch, with a progress bar
    p2p-ctl submit sleep 5 --no-wait               # prints the id only
    p2p-ctl submit echo @photo.jpg -o copy.jpg     # payload from a file (binary-safe), raw result to a file
    cat words.txt | p2p-ctl submit wordcount -     # payload from stdin
    p2p-ctl cancel ID [ID ...]
    p2p-ctl capabilities                           # who offers what
    p2p-ctl gossip "hello everyone"                # broadcast (or - / @file); without a text: the recent ones
    p2p-ctl watch ID [ID ...]
    p2p-ctl tasks --state failed
    p2p-ctl ledger --verify
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import httpx

from p2p_fast.app.api.token import ENV as TOKEN_ENV

FINAL = ("completed", "failed", "cancelled")
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


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total = total
        self.width = width
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_plain = -1.0

    def update(self, done: int, failed: int, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(frac * self.width) + "." * (self.width - int(frac * self.width))
        line = (f"[{bar}] {done}/{self.total} done" + (f", {failed} failed" if failed else "")
                + f"  {done / elapsed:.0f} tasks/s  {elapsed:.1f} s")
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or elapsed - self.last_plain >= 2:
            self.last_plain = elapsed
            print(line, file=sys.stderr, flush=True)


def _final_states(client: Client, ids: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), 5000):
        out += client.call("POST", "/v1/tasks/lookup", json={"ids": ids[i:i + 5000], "results": False})["tasks"]
    return [d for d in out if d["state"] in FINAL or d["state"] == "unknown"]


def _watch_stream(client: Client, docs: dict[str, dict[str, Any]], pending: set[str], bar: Progress | None,
                  deadline: float) -> None:
    """Completions pushed by ``GET /v1/events``: subscribe first, then look up what finished before, then follow.
    Returns when all are final, the deadline passed, or the stream is gone (the caller long-polls the rest)."""
    try:
        with client.http.stream("GET", "/v1/events", params={"types": "task"},
                                timeout=httpx.Timeout(10.0, read=20.0)) as resp:
            if resp.status_code != 200:
                return
            lines = resp.iter_lines()
            event = data = ""
            subscribed = False
            for line in lines:
                if time.monotonic() > deadline:
                    return
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and event:
                    if event == "hello" and not subscribed:
                        subscribed = True
                        found = _final_states(client, sorted(pending))
                    elif event == "task":
                        d = json.loads(data)
                        found = [d] if d.get("event") in FINAL and d.get("id") in pending else []
                    else:
                        return  # overflow: the rest by lookups
                    for d in found:
                        docs[d["id"]] = d
                        pending.discard(d["id"])
                    if found and bar is not None:
                        bar.update(len(docs), sum(1 for x in docs.values() if x["state"] != "completed"),
                                   final=not pending)
                    if not pending:
                        return
                    event = data = ""
    except (httpx.HTTPError, ValueError):
        return  # the node went away or the stream broke: long polls take over


def watch(client: Client, ids: list[str], timeout: float, quiet: bool = False) -> list[dict[str, Any]]:
    """Wait until every task is final (or ``timeout``), with a progress bar for more than one task. Completions come
    from the node's event stream; long polls finish the job where there is none (an older node, a restart)."""
    docs: dict[str, dict[str, Any]] = {}
    bar = Progress(len(ids)) if len(ids) > 1 and not quiet else None
    deadline = time.monotonic() + timeout
    left = set(ids)
    _watch_stream(client, docs, left, bar, deadline)
    pending = [i for i in ids if i in left]
    while pending and time.monotonic() < deadline:
        wait = min(1.0, max(0.0, deadline - time.monotonic()))
        found = []
        for i in range(0, len(pending), 5000):
            chunk = pending[i:i + 5000]
            found += client.call("POST", "/v1/tasks/lookup", json={"ids": chunk, "wait_s": wait, "results": False},
                                 timeout=wait + 30)["tasks"]
        for d in found:
            if d["state"] in FINAL or d["state"] == "unknown":
                docs[d["id"]] = d
        pending = [i for i in pending if i not in docs]
        if bar is not None:
            bar.update(len(docs), sum(1 for d in docs.values() if d["state"] != "completed"), final=not pending)
    if pending:
        raise CtlError(f"{len(pending)} task(s) not finished after {timeout:g} s (first: {pending[0]})")
    if len(ids) <= 100:  # full records (results) for a handful
        full = client.call("POST", "/v1/tasks/lookup", json={"ids": ids, "results": True})["tasks"]
        return list(full)
    return [docs[i] for i in ids]


def _print_task(d: dict[str, Any]) -> None:
    if d["state"] == "completed":
        result = d.get("result")
        print(f"{d['id']} completed by {d.get('worker')}: {result if result is not None else ''}")
    else:
        print(f"{d['id']} {d['state']}: {d.get('error')}")


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    s = client.call("GET", "/v1/status")
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{s['role']} {s['peer_id']}  up {s['uptime_s']:.0f} s  peers {s['peers']}  live {s.get('live_peers', 0)}"
          f"  ready {'yes' if s.get('ready') else 'no'}")
    print(f"capabilities: {', '.join(s.get('capabilities') or []) or '-'}")
    for key in ("tasks", "ledger"):
        if key in s:
            print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in s[key].items()))
    return 0


def cmd_peers(client: Client, args: argparse.Namespace) -> int:
    peers = client.call("GET", "/v1/peers")
    if args.json:
        print(json.dumps(peers, indent=2))
        return 0
    for p in peers:
        rtt = f"{p['rtt_ms']:.1f} ms" if p.get("rtt_ms") is not None else "-"
        print(f"{p['peer_id']}  {p.get('addr') or '-'}  role={p.get('role')}  "
              f"caps={','.join(p.get('capabilities') or []) or '-'}  rtt={rtt}")
    print(f"{len(peers)} peer(s)")
    return 0


def read_payload(words: list[str]) -> bytes:
    """The payload words as given; a lone ``-`` reads stdin and ``@FILE`` a file (bytes as they are; ``@@x`` is the
    text ``@x``)."""
    if len(words) == 1 and words[0] == "-":
        return sys.stdin.buffer.read()
    if len(words) == 1 and words[0].startswith("@") and not words[0].startswith("@@"):
        path = words[0][1:]
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise CtlError(f"cannot read the payload file {path}: {exc.strerror or exc}", 2) from None
    text = " ".join(words)
    return (text[1:] if text.startswith("@@") else text).encode()


def payload_fields(data: bytes) -> dict[str, str]:
    try:
        return {"payload": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(data).decode("ascii"), "payload_encoding": "base64"}


def result_bytes(d: dict[str, Any]) -> bytes:
    result = d.get("result") or ""
    return base64.b64decode(result) if d.get("result_encoding") == "base64" else result.encode()


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    task: dict[str, Any] = {"type": args.type, **payload_fields(read_payload(args.payload))}
    if args.timeout is not None:
        task["timeout_s"] = args.timeout
    if args.retries is not None:
        task["max_retries"] = args.retries
    if args.reward is not None:
        task["reward"] = args.reward
    if args.redundancy is not None:
        task["redundancy"] = args.redundancy
    ids: list[str] = []
    for start in range(0, args.count, 5000):
        n = min(5000, args.count - start)
        if args.count == 1:
            ids.append(client.call("POST", "/v1/tasks", json=task)["id"])
        else:
            ids += client.call("POST", "/v1/tasks/batch", json={"tasks": [task] * n})["ids"]
    if not args.wait:
        for i in ids:
            print(i)
        return 0
    docs = watch(client, ids, args.wait_timeout)
    if args.output and len(docs) == 1 and docs[0]["state"] == "completed":
        data = result_bytes(docs[0])
        if args.output == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            try:
                with open(args.output, "wb") as fh:
                    fh.write(data)
            except OSError as exc:
                raise CtlError(f"cannot write {args.output}: {exc.strerror or exc}", 2) from None
        return 0
    return _report(docs, args)


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    code = 0
    docs = []
    for task_id in args.ids:
        try:
            doc = client.call("POST", f"/v1/tasks/{task_id}/cancel")
        except CtlError as exc:
            print(f"{task_id}: {exc}", file=sys.stderr)
            code = 1
            continue
        docs.append(doc)
        if not args.json:
            print(f"{task_id} {doc['state']}")
    if args.json:
        print(json.dumps(docs, indent=2))
    return code


def cmd_capabilities(client: Client, args: argparse.Namespace) -> int:
    doc = client.call("GET", "/v1/capabilities")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"this node: {', '.join(doc.get('node') or []) or '-'}")
    for cap, peers in sorted(doc.get("network", {}).items()):
        print(f"{cap}: {len(peers)} live peer(s)  " + " ".join(str(p) for p in peers))
    return 0


def cmd_gossip(client: Client, args: argparse.Namespace) -> int:
    if args.text:
        data = read_payload(args.text)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CtlError("gossip carries text: the message is not UTF-8", 2) from None
        doc = client.call("POST", "/v1/gossip", json={"text": text})
        print(json.dumps(doc) if args.json else f"sent ({len(data)} bytes)")
        return 0
    msgs = client.call("GET", "/v1/gossip", params={"limit": args.limit})
    if args.json:
        print(json.dumps(msgs, indent=2))
        return 0
    for m in msgs:
        print(" ".join(f"{k}={v}" for k, v in m.items() if k != "text") + f"  {m.get('text', '')}")
    return 0


def _report(docs: list[dict[str, Any]], args: argparse.Namespace) -> int:
    failed = [d for d in docs if d["state"] != "completed"]
    if args.json:
        print(json.dumps(docs, indent=2))
    elif len(docs) <= 20:
        for d in docs:
            _print_task(d)
    else:
        print(f"{len(docs) - len(failed)} of {len(docs)} completed")
        for d in failed[:10]:
            _print_task(d)
    return 1 if failed else 0


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    return _report(watch(client, list(args.ids), args.wait_timeout), args)


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    print(json.dumps(client.call("GET", f"/v1/tasks/{args.id}"), indent=2))
    return 0


def cmd_tasks(client: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.state:
        params["state"] = args.state
    doc = client.call("GET", "/v1/tasks", params=params)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    for t in doc["tasks"]:
        print(f"{t['id']}  {t['type']:<8} {t['state']:<10} attempts={t['attempts']}  worker={t.get('worker') or '-'}"
              + (f"  error={t['error']}" if t.get("error") else ""))
    print(", ".join(f"{k} {v}" for k, v in doc["counts"].items()))
    return 0


def cmd_ledger(client: Client, args: argparse.Namespace) -> int:
    doc = client.call("GET", "/v1/ledger", params={"verify": args.verify, "limit": args.limit})
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"balance {doc['balance']}  (earned {doc['earned']} in {doc['receipts_earned']} receipts, "
          f"spent {doc['spent']} in {doc['receipts_spent']})")
    print("reputation of the workers this node used (decayed counts):")
    for peer, r in doc["reputation"].items():
        banned = f", EXCLUDED for {r['excluded_for_s']:g} s" if r.get("excluded_for_s") else ""
        print(f"  {peer}: {r['successes']:g} ok, {r['failures']:g} failed, {r['timeouts']:g} timed out, "
              f"{r.get('wrong', 0):g} wrong (score {r['score']}{banned})")
    credit = doc.get("credit")
    if credit:
        limit = f"debt limit {credit['debt_limit']:g}" if credit["debt_limit"] else "no debt limit"
        print(f"credit with each peer (grant {credit['initial_credit']:g}, {limit}, debts halve every "
              f"{credit['debt_decay']:g} s):")
        for peer, c in credit["peers"].items():
            print(f"  {peer}: balance {c['balance']:g}  (served it {c['served']}, it served us {c['received']}, "
                  f"refused {c['refused']})")
    if "verification" in doc:
        v = doc["verification"]
        print(f"signatures: {v['verified']} verified, {v['bad']} bad")
        if v["bad"]:
            return 1
    return 0


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


COMMANDS = {"status": cmd_status, "peers": cmd_peers, "submit": cmd_submit, "watch": cmd_watch, "get": cmd_get,
            "tasks": cmd_tasks, "ledger": cmd_ledger, "cancel": cmd_cancel, "capabilities": cmd_capabilities,
            "gossip": cmd_gossip}


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


if __name__ == "__main__":
    sys.exit(main())
