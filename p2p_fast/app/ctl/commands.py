"""The ``p2p-ctl`` commands: each takes the HTTP client and the parsed arguments, prints, and returns the exit code."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

from p2p_fast.app.ctl.client import Client, CtlError
from p2p_fast.app.ctl.watch import watch


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


COMMANDS = {"status": cmd_status, "peers": cmd_peers, "submit": cmd_submit, "watch": cmd_watch, "get": cmd_get,
            "tasks": cmd_tasks, "ledger": cmd_ledger, "cancel": cmd_cancel, "capabilities": cmd_capabilities,
            "gossip": cmd_gossip}
