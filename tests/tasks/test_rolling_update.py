"""A rolling update, with real node processes: a network that mixes nodes of this release ("old") and of the next
one ("new", whose schema adds fields to every message: ``tests/wire/v2.proto``) does all its work without a refusal.

How a node is "new": it runs this repository's node with ``tests/wire/v2_node`` on PYTHONPATH and
``P2P_TEST_WIRE=v2``; that directory's ``sitecustomize`` makes the process's codec encode every message with the v2
schema, extra fields set, and decode with the v2 classes (``tests/wire/wire_v2.py``): the bytes on the wire are those a
node built from v2.proto sends. The node code is otherwise the same, which is the point: only the wire changed. A new
node says so on stderr, and reports the first message of each type that reached it with v2 fields (proof that the
other new node really sent them).

The network: an old bootstrap (a submitter without workers' capabilities), an old and a new worker (compute and
storage), and a new node that only submits. Tasks go from the old submitter and from the new one with redundancy 2,
so each runs on both workers and every request, response, receipt and cancel-free path crosses versions both ways.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx

from conftest import Api, worker_config
from harness import Cluster, NodeProcess, node_config, wait_until
from p2p_fast.protocols.codec_errors import REASONS

SHIM = Path(__file__).resolve().parents[1] / "wire" / "v2_node"
N_TASKS = 12
N_BLOBS = 4


def new_node_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(SHIM) + (os.pathsep + path if path else ""), "P2P_TEST_WIRE": "v2"}


def codec_refusals(node: NodeProcess) -> dict[str, float]:
    """``p2p_messages_rejected_total`` for the codec's reasons, any topic or protocol."""
    text = httpx.get(node.http + "/metrics", timeout=5).text
    out: dict[str, float] = {}
    for m in re.finditer(r'p2p_messages_rejected_total\{reason="([^"]+)",topic="([^"]+)"\} ([0-9.e+]+)', text):
        if m.group(1) in REASONS and float(m.group(3)):
            out[f"{m.group(2)} {m.group(1)}"] = float(m.group(3))
    return out


def live_view(node: NodeProcess) -> dict[str, set[str]]:
    """peer id -> capabilities, from the node's live view."""
    out: dict[str, set[str]] = {}
    for cap, peers in httpx.get(node.http + "/v1/capabilities", timeout=5).json()["network"].items():
        for peer in peers:
            out.setdefault(peer, set()).add(cap)
    return out


def blob_count(node: NodeProcess) -> int:
    root = node.data_dir / "blobs"
    return sum(1 for p in root.rglob("*") if p.is_file() and len(p.name) == 64) if root.exists() else 0


def test_old_and_new_nodes_work_together(cluster: Cluster) -> None:
    boot = cluster.start("boot-old", node_config("bootstrap"))
    w_old = cluster.start("w-old", worker_config(boot, ["compute", "storage"]))
    w_new = cluster.start("w-new", worker_config(boot, ["compute", "storage"]), env=new_node_env())
    s_new = cluster.start("s-new", worker_config(boot, ["gpu"]), env=new_node_env())  # submits; runs nothing here
    nodes = [boot, w_old, w_new, s_new]
    for node in (w_new, s_new):
        assert "wire-v2: this node speaks the v2 schema" in node.stderr()
    for node in (w_old, boot):
        assert "wire-v2" not in node.stderr()

    # Presence converges across versions: every node sees every other node with its capabilities.
    want = {n.peer_id: {"compute", "storage"} if n in (w_old, w_new) else {"gpu"} if n is s_new
            else {"bootstrap", "discovery"} for n in nodes}
    for node in nodes:
        others = {p: caps for p, caps in want.items() if p != node.peer_id}
        wait_until(lambda: live_view(node) == others, 40, f"{node.name} to see every other node")

    api_old, api_new, api_workers = Api(boot), Api(s_new), [Api(w_old), Api(w_new)]
    try:
        # Tasks from an old and from a new submitter, each run by both workers (redundancy 2).
        for api, tag in ((api_old, "old"), (api_new, "new")):
            payloads = [f"{tag}-{i}" for i in range(N_TASKS)]
            ids = api.submit_batch([{"type": "echo", "payload": p, "redundancy": 2} for p in payloads])
            docs = api.wait_all(ids, timeout=90)
            assert [d["state"] for d in docs] == ["completed"] * N_TASKS, [d.get("error") for d in docs]
            assert [d["result"] for d in docs] == payloads

        # Receipts crossed versions and verify: each worker earned from both submitters, no bad signature.
        def earned_from_both() -> bool:
            return all({e["submitter"] for e in a.ledger(limit=1000)["entries"] if e["direction"] == "earned"}
                       >= {boot.peer_id, s_new.peer_id} for a in api_workers)

        wait_until(earned_from_both, 30, "both workers to be paid by both submitters")
        for a in api_workers:
            assert a.ledger(verify=True)["verification"]["bad"] == 0

        # Blobs: every put is replicated to the other worker (a BlobPut across versions), and read back.
        keys = []
        for i in range(N_BLOBS):
            api = api_old if i % 2 else api_new
            doc = api.get(api.submit("storage", f"put blob-{i}"), wait=30)
            assert doc["state"] == "completed" and doc["result"].endswith("replicas=2"), doc
            keys.append(doc["result"].split()[0])
        for i, key in enumerate(keys):
            doc = api_old.get(api_old.submit("storage", f"get {key}"), wait=30)
            assert doc["state"] == "completed" and doc["result"] == f"blob-{i}"
        assert blob_count(w_old) == blob_count(w_new) == N_BLOBS
    finally:
        for a in (api_old, api_new, *api_workers):
            a.close()

    # Gossip text both ways.
    for sender, receiver in ((w_new, boot), (boot, w_new)):
        mark = len(receiver.lines)
        text = f"hello-from-{sender.name}"

        def arrived() -> bool:
            sender.command(f"gossip {text}")
            return any(text in line for line in receiver.lines[mark:])

        wait_until(arrived, 20, f"{receiver.name} to print {sender.name}'s gossip", interval=1.0)

    # The new nodes did send v2 fields (each saw the other's), and no node refused a message.
    for name in ("CapabilityAdvertisement", "TaskRequest", "TaskReceipt"):
        assert f"received a {name} with v2 fields" in w_new.stderr(), name
    assert "received a TaskResponse with v2 fields" in s_new.stderr()
    for node in nodes:
        assert codec_refusals(node) == {}, (node.name, codec_refusals(node))
        assert "dropped a frame" not in node.stderr(), node.name
