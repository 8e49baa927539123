"""Batching with real node processes: a bootstrap submits to a worker of this release and to one that does not take
batch-signed receipts (``tasks.receipt_batches: false`` offers only task protocol 1.0.0, as a node of an older
release does). Every task completes; the first worker is paid with batch signatures (a Merkle path in each receipt),
the other with one signature per receipt; both credit every task and re-verify their whole ledger. The pooled tasks
(``sleep 0``, a no-op in a pool child) went to the children in batches: fewer pipe writes than tasks."""

from __future__ import annotations

import re

import httpx

from conftest import Api, wait_for_workers, worker_config
from harness import Cluster, node_config, wait_until

N_TASKS = 600
BATCH_MAGIC_HEX = b"MRK1".hex()


def metric_sum(node_http: str, name: str) -> float:
    text = httpx.get(node_http + "/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


def test_batch_receipts_and_pool_batches_with_a_worker_that_takes_single_receipts(cluster: Cluster) -> None:
    boot = cluster.start("boot", node_config("bootstrap"))
    w_new = cluster.start("w-new", worker_config(boot, ["compute"]))
    w_old = cluster.start("w-old", worker_config(boot, ["compute"], receipt_batches=False))
    wait_for_workers(boot, "compute", 2)
    api, workers = Api(boot, timeout=60), {"new": Api(w_new), "old": Api(w_old)}
    try:
        ids = api.submit_batch([{"type": "sleep", "payload": "0"} for _ in range(N_TASKS)])
        docs = api.wait_all(ids, timeout=120)
        assert [d["state"] for d in docs] == ["completed"] * N_TASKS, {d.get("error") for d in docs}
        by_worker = {d["worker"] for d in docs}
        assert by_worker == {w_new.peer_id, w_old.peer_id}, "both workers should have run tasks"
        ran = {name: sum(1 for d in docs if d["worker"] == node.peer_id)
               for name, node in (("new", w_new), ("old", w_old))}

        def earned(name: str) -> list[dict[str, object]]:
            return [e for e in workers[name].ledger(limit=10000)["entries"] if e["direction"] == "earned"]

        wait_until(lambda: all(len(earned(n)) == ran[n] for n in ran), 60, "every task's receipt to be credited")
        new_sigs = [str(e["signature"]) for e in earned("new")]
        old_sigs = [str(e["signature"]) for e in earned("old")]
        assert all(s.startswith(BATCH_MAGIC_HEX) for s in new_sigs)
        assert all(len(s) == 128 for s in old_sigs)  # 64 bytes: one Ed25519 signature per receipt
        # Far fewer signatures than receipts: the batch signature is bytes 14..78 of each (Ed25519).
        assert len({s[28:156] for s in new_sigs}) < len(new_sigs) / 2
        for name in ("new", "old"):
            assert workers[name].ledger(verify=True)["verification"] == {"verified": ran[name], "bad": 0}
        assert api.ledger(verify=True)["verification"] == {"verified": N_TASKS, "bad": 0}
        for node in (w_new, w_old):
            assert "refused" not in node.stderr()

        # The pool children got the no-ops in batches.
        batches = sum(metric_sum(n.http, "p2p_tasks_pool_batches_total") for n in (w_new, w_old))
        batched = sum(metric_sum(n.http, "p2p_tasks_pool_batched_total") for n in (w_new, w_old))
        assert batched == N_TASKS
        assert batches < N_TASKS / 2, (batches, batched)
    finally:
        api.close()
        for a in workers.values():
            a.close()
