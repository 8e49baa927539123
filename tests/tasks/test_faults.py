"""Faults with real processes: a worker killed with SIGKILL in the middle of 500 tasks, and the submitter itself
killed and restarted in the middle of a batch."""

from __future__ import annotations

import os
import signal
from collections import Counter

from conftest import Api, ledger_rows, wait_for_workers, worker_config
from harness import Cluster, node_config, wait_until

from p2p_fast.protocols.presence import MISSED_REFRESHES_BEFORE_DEAD, refresh_interval


def test_kill9_a_worker_mid_batch_everything_completes_once(cluster: Cluster) -> None:
    boot = cluster.start("boot", node_config("bootstrap"))
    workers = [cluster.start(f"w{i}", worker_config(boot, ["compute"], slots=4)) for i in range(3)]
    wait_for_workers(boot, "compute", 3)
    api = Api(boot)
    try:
        n = 500
        # 40 ms of work each (process pool): ~2 s for the batch on 3 x 4 slots, time to kill one worker mid-way.
        ids = api.submit_batch([{"type": "sleep", "payload": "0.04", "max_retries": 3} for _ in range(n)])
        victim = workers[1]

        def progress() -> int:
            return api.status()["tasks"]["completed"]

        wait_until(lambda: progress() >= 100, 60, "100 tasks to complete")
        victim.kill9()
        docs = api.wait_all(ids, timeout=90)
        assert Counter(d["state"] for d in docs) == {"completed": n}, [d["error"] for d in docs if d["error"]]
        # Tasks in flight on the victim were retried elsewhere; none completed on it after its death.
        hit = [d for d in docs if any(a["outcome"] == "disconnected" for a in d["attempts"])]
        assert hit, "no task was running on the killed worker"
        for d in hit:
            assert d["attempts"][-1]["outcome"] == "ok" and d["worker"] != victim.peer_id
        # The submitter paid each task exactly once; no worker was credited twice for one task.
        spent = ledger_rows(boot, "spent")
        assert len(spent) == n and len({r[0] for r in spent}) == n
        by_task = {r[0]: r for r in spent}
        survivors = [w for w in workers if w is not victim]
        wait_until(lambda: sum(len(ledger_rows(w, "earned")) for w in survivors)
                   == sum(1 for r in spent if r[2] != victim.peer_id), 20, "receipts to reach the live workers")
        earned = [r for w in workers for r in ledger_rows(w, "earned")]
        assert len({r[0] for r in earned}) == len(earned)  # nothing credited twice
        for r in earned:
            assert by_task[r[0]][2] == r[2]
        assert Counter(d["worker"] for d in docs)[victim.peer_id] == sum(1 for r in spent if r[2] == victim.peer_id)
        # The dead worker left the live view: no goodbye after SIGKILL, so when its record's TTL ran out (three of
        # its refresh intervals, 1 s heartbeat and 4 nodes here), counted from its last advertisement at the latest.
        ttl = MISSED_REFRESHES_BEFORE_DEAD * refresh_interval(1.0, 4)
        wait_until(lambda: victim.peer_id not in boot.get("/v1/capabilities")["network"].get("compute", []),
                   ttl + 10, "the killed worker to leave the live view")
    finally:
        api.close()


def test_submitter_restart_resumes_pending_and_keeps_finished(cluster: Cluster) -> None:
    boot = cluster.start("boot", node_config("bootstrap"))
    workers = [cluster.start(f"w{i}", worker_config(boot, ["compute"], slots=2)) for i in range(2)]
    # The submitter is a node without task capabilities of its own, so every task goes to the workers.
    sub_cfg = node_config("worker", node={"capabilities": []}, network={"bootstrap_peers": [boot.addr()]})
    sub = cluster.start("sub", sub_cfg)
    wait_for_workers(sub, "compute", 2)
    api = Api(sub)
    try:
        n = 200
        ids = api.submit_batch([{"type": "sleep", "payload": "0.05"} for _ in range(n)]
                               + [{"type": "echo", "payload": "early"}])
        wait_until(lambda: api.status()["tasks"]["completed"] >= 30, 60, "30 tasks to complete")
        sub.kill9()  # no goodbye: only what the journal committed survives
        api.close()
        sub.start().wait_started()
        api = Api(sub)
        restarted = api.lookup(ids, results=False)
        done_before = [d["id"] for d in restarted if d["state"] == "completed"]
        assert len(done_before) >= 30 and len(done_before) < len(ids)
        assert all(d["state"] in ("completed", "pending", "running") for d in restarted)
        wait_for_workers(sub, "compute", 1, timeout=60)
        docs = api.wait_all(ids, timeout=120)
        assert Counter(d["state"] for d in docs) == {"completed": n + 1}
        assert docs[-1]["result"] == "early"
        interrupted = [d for d in docs if any(a["outcome"] == "interrupted" for a in d["attempts"])]
        for d in interrupted:
            a = next(a for a in d["attempts"] if a["outcome"] == "interrupted")
            assert a["reason"] == "submitter restarted" and not a["counted"]
        # Paid once each, across the restart.
        spent = ledger_rows(sub, "spent")
        assert len(spent) == n + 1 and len({r[0] for r in spent}) == n + 1
        # Receipts still unsent at the kill, or sent just before it (kill -9 can lose those), go out again.
        try:
            wait_until(lambda: sum(len(ledger_rows(w, "earned")) for w in workers) == n + 1, 20,
                       "every receipt to reach its worker")
        except TimeoutError:
            got = {r[0] for w in workers for r in ledger_rows(w, "earned")}
            missing = sorted({r[0] for r in spent} - got)
            raise AssertionError(f"{len(missing)} receipt(s) never reached a worker: {missing[:5]}; spent rows: "
                                 f"{[r for r in spent if r[0] in missing[:5]]}") from None
        earned = [r for w in workers for r in ledger_rows(w, "earned")]
        assert len({r[0] for r in earned}) == n + 1
    finally:
        api.close()


def test_a_frozen_worker_costs_a_stream_open_timeout_not_the_connection_timeout(cluster: Cluster) -> None:
    """A worker whose connection is up but which answers nothing (SIGSTOP here; in the pod cluster a peer that closed
    its side during a partition whose FIN never arrived) must not hold tasks for ``connection_timeout`` (120 s here):
    a stream over a live connection opens in one round trip, so the submitter gives up on it after a short bound,
    drops the dead connection and runs the tasks elsewhere."""
    boot = cluster.start("boot", node_config("bootstrap", network={"connection_timeout": 120}))
    workers = [cluster.start(f"w{i}", worker_config(boot, ["compute"], slots=4)) for i in range(2)]
    wait_for_workers(boot, "compute", 2)
    frozen = workers[1]
    api = Api(boot)
    assert frozen.proc is not None
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    try:
        # Submitted at once, while the frozen worker is still in the live view: some tasks are assigned to it.
        ids = api.submit_batch([{"type": "sleep", "payload": "0.05", "timeout_s": 120, "max_retries": 3}
                                for _ in range(8)])
        docs = api.wait_all(ids, timeout=45)
        assert Counter(d["state"] for d in docs) == {"completed": 8}, docs
        assert all(d["worker"] == workers[0].peer_id for d in docs)
        hit = [d for d in docs if d["attempts"][0]["worker"] == frozen.peer_id]
        assert hit, "no task was assigned to the frozen worker"
        for d in hit:
            assert d["attempts"][0]["outcome"] == "unreachable" and not d["attempts"][0]["counted"], d["attempts"]
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
        api.close()
