"""Incentives with real processes: redundancy against a dishonest worker, spot checks, verifiers, reputation that
excludes, bilateral credit against a free-rider, and all of it across restarts.

The dishonest worker runs the test plugin (tests/tasks/plugin) with ``P2P_TEST_CORRUPT=1``: its ``square`` and
``checked_square`` results are off by one. Nothing in the node itself knows about that switch."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from typing import Any

import httpx

from conftest import Api, ledger_rows, plugin_env, wait_for_workers, worker_config
from harness import Cluster, NodeProcess, node_config, record, wait_until

REPLICA_PREFIX = 20


def _ctl(node: NodeProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2p_fast.app.ctl", "--data-dir", str(node.data_dir), *argv],
                          capture_output=True, text=True, timeout=60)


def _submitter(boot: NodeProcess, **tasks: Any) -> dict[str, Any]:
    """A node with no task capability of its own: every task goes to the workers."""
    return node_config("worker", node={"capabilities": []}, network={"bootstrap_peers": [boot.addr()]}, tasks=tasks)


def _honest_and_bad(cluster: Cluster, n_honest: int = 2, **sub_tasks: Any) -> tuple[NodeProcess, list[NodeProcess],
                                                                                    NodeProcess, NodeProcess]:
    boot = cluster.start("boot", node_config("bootstrap"))
    honest = [cluster.start(f"g{i}", worker_config(boot, ["compute"], slots=2), env=plugin_env())
              for i in range(n_honest)]
    bad = cluster.start("bad", worker_config(boot, ["compute"], slots=2), env=plugin_env(P2P_TEST_CORRUPT="1"))
    sub = cluster.start("sub", _submitter(boot, **sub_tasks), env=plugin_env())
    wait_for_workers(sub, "compute", n_honest + 1)
    return boot, honest, bad, sub


def test_redundancy_accepts_only_correct_results_pays_only_agreeing_workers_and_excludes_the_cheat(
        cluster: Cluster) -> None:
    _, honest, bad, sub = _honest_and_bad(cluster, 2, ban_after=3, ban_duration=600, assign_timeout=5)
    api = Api(sub)
    try:
        nums = list(range(2, 26))
        ids = api.submit_batch([{"type": "square", "payload": str(n), "redundancy": 3} for n in nums])
        docs = api.wait_all(ids, timeout=120)
        assert Counter(d["state"] for d in docs) == {"completed": len(nums)}, [d["error"] for d in docs]
        wrong_accepted = sum(1 for n, d in zip(nums, docs) if d["result"] != str(n * n))
        assert wrong_accepted == 0
        # The bad worker ran some replicas, was outvoted each time, and was never paid.
        outvoted = [a for d in docs for a in d["attempts"] if a["outcome"] == "outvoted"]
        assert outvoted and all(a["worker"] == bad.peer_id for a in outvoted)
        spent = ledger_rows(sub, "spent")
        bad_paid = sum(1 for r in spent if r[2] == bad.peer_id)
        assert bad_paid == 0
        # Exactly once: per task, one receipt per agreeing worker, no worker paid twice for one task.
        by_task: dict[str, list[str]] = {}
        for task_id, _, worker, _ in spent:
            by_task.setdefault(task_id[:REPLICA_PREFIX], []).append(worker)
        for d in docs:
            paid = by_task.get(d["id"][:REPLICA_PREFIX], [])
            agreeing = [a["worker"] for a in d["attempts"] if a["outcome"] == "ok"]
            assert sorted(paid) == sorted(agreeing) and len(set(paid)) == len(paid) >= 2, (d["attempts"], paid)
        wait_until(lambda: sum(len(ledger_rows(w, "earned")) for w in honest) == len(spent), 20,
                   "receipts to reach the honest workers")
        assert ledger_rows(bad, "earned") == []
        # Its reputation fell, and after ban_after wrong results it is excluded.
        rep = api.ledger()["reputation"][bad.peer_id]
        assert rep["wrong"] >= 3 and rep["excluded_for_s"] > 0 and rep["score"] < 0.2, rep
        for w in honest:
            assert api.ledger()["reputation"][w.peer_id]["wrong"] == 0
        more = api.submit_batch([{"type": "square", "payload": str(n), "redundancy": 2} for n in range(30, 40)])
        later = api.wait_all(more, timeout=60)
        assert all(d["state"] == "completed" and d["result"] == str(int(n) ** 2)
                   for n, d in zip(range(30, 40), later)), later
        assert not any(a["worker"] == bad.peer_id for d in later for a in d["attempts"])
        # The same through p2p-ctl and the console.
        r = _ctl(sub, "submit", "square", "9", "--redundancy", "2")
        assert r.returncode == 0 and "81" in r.stdout, r.stdout + r.stderr
        r = _ctl(sub, "ledger")
        assert r.returncode == 0 and f"{bad.peer_id}: " in r.stdout and "EXCLUDED" in r.stdout, r.stdout
        mark = len(sub.lines)
        sub.command("task -r 2 square 11")
        sub.wait_output(r"completed by \S+: 121$", start=mark)
        sub.command("task -r x square 11")
        sub.wait_output(r"usage: task -r K", start=mark)
        r = httpx.post(sub.http + "/v1/tasks", json={"type": "square", "payload": "1", "redundancy": 17})
        assert r.status_code == 422 and "redundancy" in r.text
        r = httpx.post(sub.http + "/v1/tasks", json={"type": "storage", "payload": "x", "redundancy": 2})
        assert r.status_code == 422 and "side effects" in r.text
        # The exclusion and the reputation survive a restart of the submitter; its ledger still verifies.
        api.close()
        sub.stop()
        sub.start().wait_started()
        api = Api(sub)
        rep2 = api.ledger(verify=True)
        assert rep2["verification"]["bad"] == 0 and rep2["verification"]["verified"] == len(ledger_rows(sub, "spent"))
        assert rep2["reputation"][bad.peer_id]["wrong"] >= 3 and rep2["reputation"][bad.peer_id]["excluded_for_s"] > 0
        wait_for_workers(sub, "compute", 3)
        again = api.submit_batch([{"type": "square", "payload": "7"} for _ in range(6)])
        docs3 = api.wait_all(again, timeout=60)
        assert all(d["result"] == "49" for d in docs3)
        assert not any(a["worker"] == bad.peer_id for d in docs3 for a in d["attempts"])
        record("redundancy_vs_bad_worker", tasks=len(nums) + 10, redundancy="3 then 2", wrong_accepted=wrong_accepted,
               bad_worker_outvoted=len(outvoted), bad_worker_paid=bad_paid)
    finally:
        api.close()


def test_no_majority_adds_workers_then_fails_listing_every_result(cluster: Cluster) -> None:
    """Two workers, one bad, redundancy 2: they disagree, there is no third worker to ask, the task fails with both
    results in its error and nobody is paid."""
    _, honest, bad, sub = _honest_and_bad(cluster, 1, assign_timeout=5)
    api = Api(sub)
    try:
        (task_id,) = api.submit_batch([{"type": "square", "payload": "12", "redundancy": 2}])
        (doc,) = api.wait_all([task_id], timeout=60)
        assert doc["state"] == "failed", doc
        assert "no result was returned by a majority" in doc["error"]
        assert "'144'" in doc["error"] and "'145'" in doc["error"]
        assert honest[0].peer_id in doc["error"] and bad.peer_id in doc["error"]
        assert ledger_rows(sub, "spent") == []
        # Cancelling a redundant task stops every replica on every worker.
        task_id = api.submit("sleep", "30", timeout_s=60, redundancy=2)
        workers = [honest[0], bad]
        wait_until(lambda: all(w.status()["tasks"]["worker_running"] == 1 for w in workers), 20,
                   "both workers to run a replica")
        assert api.get(task_id)["state"] == "running" and api.status()["tasks"]["running"] == 1
        r = api.client.post(f"/v1/tasks/{task_id}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        wait_until(lambda: all(w.status()["tasks"]["worker_running"] == 0 for w in workers), 20,
                   "both replicas to stop")
        assert api.status()["tasks"]["running"] == 0 and api.status()["tasks"]["pending"] == 0
    finally:
        api.close()


def test_spot_checks_catch_a_bad_worker_at_the_configured_rate_and_verifiers_catch_it_always(
        cluster: Cluster) -> None:
    _, honest, bad, sub = _honest_and_bad(cluster, 2, verify_rate=0.5, ban_after=1000)
    api = Api(sub)
    try:
        n = 60
        ids = api.submit_batch([{"type": "square", "payload": str(i)} for i in range(n)])
        docs = api.wait_all(ids, timeout=120)
        assert all(d["state"] == "completed" for d in docs), [d["error"] for d in docs]
        checked = [d for d in docs if d["redundancy"] == 2]
        # verify_rate 0.5 over 60 tasks: outside 12..48 has a probability below 1e-5.
        assert 12 <= len(checked) <= 48, len(checked)
        # Every checked task has the right result; the bad worker, whenever checked, was outvoted.
        for i, d in enumerate(docs):
            if d["redundancy"] == 2:
                assert d["result"] == str(i * i), d
        for d in checked:
            for a in d["attempts"]:
                if a["worker"] == bad.peer_id and a["outcome"] in ("ok", "outvoted"):
                    assert a["outcome"] == "outvoted"
        unchecked_on_bad = [d for d in docs if d["redundancy"] == 1 and d["worker"] == bad.peer_id]
        caught = sum(1 for d in checked for a in d["attempts"] if a["outcome"] == "outvoted")
        assert caught >= 1
        wrong = api.ledger()["reputation"][bad.peer_id]["wrong"]
        assert abs(wrong - caught) < 0.05, (wrong, caught)  # counts fade with a half-life of a day
        # A type with a verifier: without redundancy or spot checks, no wrong result is ever accepted.
        ids2 = api.submit_batch([{"type": "checked_square", "payload": str(i), "max_retries": 5}
                                 for i in range(30)])
        docs2 = api.wait_all(ids2, timeout=120)
        verifier_wrong = sum(1 for i, d in enumerate(docs2)
                             if d["state"] == "completed" and d["result"] != str(i * i))
        assert [d["result"] for d in docs2] == [str(i * i) for i in range(30)], [d["error"] for d in docs2]
        by_verifier = sum(1 for d in docs2 for a in d["attempts"] if a["outcome"] == "wrong")
        assert all(a["worker"] == bad.peer_id for d in docs2 for a in d["attempts"] if a["outcome"] == "wrong")
        record("spot_checks", tasks=n, verify_rate=0.5, spot_checked=len(checked), bad_caught=caught,
               wrong_accepted_unchecked=len(unchecked_on_bad), verifier_tasks=30, verifier_caught=by_verifier,
               verifier_wrong_accepted=verifier_wrong)
    finally:
        api.close()


def _credit(api: Api, peer: str) -> dict[str, Any]:
    return api.ledger()["credit"]["peers"].get(peer, {})


def test_free_rider_is_refused_past_grant_and_debt_limit_contributor_first_and_served_again_after_working(
        cluster: Cluster) -> None:
    boot = cluster.start("boot", node_config("bootstrap"))
    credit = {"initial_credit": 10, "debt_limit": 10, "debt_decay": 0}
    w = cluster.start("w", worker_config(boot, ["compute"], slots=1, **credit))  # the default queue_limit, 2
    # The contributor itself sets no debt limit: w's 30 tasks for it are more than a grant and a limit of 10 each.
    contrib = cluster.start("contrib", worker_config(boot, ["wordcount"]), env=plugin_env())
    rider = cluster.start("rider", _submitter(boot, **credit))
    wait_for_workers(w, "wordcount", 1)
    wait_for_workers(rider, "compute", 1)
    wait_for_workers(contrib, "compute", 1)
    wapi, capi, rapi = Api(w), Api(contrib), Api(rider)
    try:
        # The contributor works for w first.
        ids = wapi.submit_batch([{"type": "wordcount", "payload": "a b c"} for _ in range(30)])
        assert all(d["result"] == "3" for d in wapi.wait_all(ids, timeout=60))
        assert _credit(wapi, contrib.peer_id)["received"] == 30
        # Contention: the free-rider floods w with 1000 tasks, the contributor sends 20 right after.
        rider_ids = rapi.submit_batch([{"type": "sleep", "payload": "0.2", "max_retries": 0} for _ in range(1000)])
        wait_until(lambda: _credit(wapi, rider.peer_id).get("served", 0) >= 1, 30, "w to serve the free-rider")
        contrib_ids = capi.submit_batch([{"type": "sleep", "payload": "0.2"} for _ in range(20)])
        cdocs = capi.wait_all(contrib_ids, timeout=120)
        rdocs = rapi.wait_all(rider_ids, timeout=180)
        assert all(d["state"] == "completed" for d in cdocs)
        served = [d for d in rdocs if d["state"] == "completed"]
        refused = [d for d in rdocs if d["state"] == "failed"]
        assert len(served) == 20 and len(refused) == 980  # grant 10 + debt limit 10
        assert all("busy: credit" in d["error"] for d in refused), refused[0]["error"]
        contrib_last = max(d["finished"] for d in cdocs)
        contrib_first = min(d["created"] for d in cdocs)
        rider_during = sum(1 for d in served if contrib_first < d["finished"] <= contrib_last)
        assert rider_during <= 5, (rider_during, len(cdocs))  # first come, first served would be about 20
        doc = _credit(wapi, rider.peer_id)
        assert doc["served"] == 20 and doc["balance"] == -10 and doc["refused"] >= 980
        r = _ctl(w, "ledger")
        assert r.returncode == 0 and "credit with each peer" in r.stdout and f"{rider.peer_id}: balance -10" in r.stdout
        metrics = httpx.get(w.http + "/metrics").text
        assert f'p2p_credit_balance{{peer="{rider.peer_id}"}} -10.0' in metrics
        assert f'p2p_credit_balance{{peer="{contrib.peer_id}"}}' in metrics
        assert 'p2p_tasks_refused_total{reason="credit"} 980.0' in metrics
        record("free_rider_contention", worker_slots=1, contributor_tasks=len(cdocs), rider_tasks=1000,
               rider_served=len(served), rider_refused=len(refused),
               rider_served_while_contributor_busy=rider_during)
        # The free-rider starts working (for w): w's balance with it rises by what it did, and it is served again
        # for exactly that much.
        contrib.stop()
        rapi.close()
        rider.stop()
        rider.config["node"]["capabilities"] = ["wordcount"]
        rider.env = plugin_env()
        rider.start().wait_started()
        rapi = Api(rider)
        wait_for_workers(w, "wordcount", 1)
        ids = wapi.submit_batch([{"type": "wordcount", "payload": "x y"} for _ in range(5)])
        wdocs = wapi.wait_all(ids, timeout=60)
        assert all(d["worker"] == rider.peer_id and d["result"] == "2" for d in wdocs), wdocs
        wait_for_workers(rider, "compute", 1)
        again = rapi.wait_all(rapi.submit_batch([{"type": "sleep", "payload": "0.01", "max_retries": 0}
                                                  for _ in range(10)]), timeout=60)
        assert Counter(d["state"] for d in again) == {"completed": 5, "failed": 5}, [d["error"] for d in again]
        before = {p: _credit(wapi, p) for p in (rider.peer_id, contrib.peer_id)}
        assert before[rider.peer_id]["received"] == 5 and before[rider.peer_id]["balance"] == -10
        # Restart every node: balances survive, every ledger still verifies.
        for api_ in (wapi, rapi, capi):
            api_.close()
        for node in (w, rider, boot):
            node.stop()
        for node in (boot, w, rider, contrib):
            node.start().wait_started()
        wapi, capi, rapi = Api(w), Api(contrib), Api(rider)
        after = {p: _credit(wapi, p) for p in before}
        for p in before:
            for key in ("balance", "served", "received", "refused"):
                assert after[p][key] == before[p][key], (p, key, before[p], after[p])
        for api_ in (wapi, capi, rapi):
            v = api_.ledger(verify=True)["verification"]
            assert v["bad"] == 0 and v["verified"] > 0, v
    finally:
        for api_ in (wapi, capi, rapi):
            api_.close()


def test_redundant_tasks_exactly_once_across_a_submitter_kill9(cluster: Cluster) -> None:
    """Killed with redundant tasks in flight, the submitter runs their replicas again after the restart: every task
    ends with one accepted result, and each agreeing worker of the deciding round is paid once."""
    boot = cluster.start("boot", node_config("bootstrap"))
    workers = [cluster.start(f"w{i}", worker_config(boot, ["compute"], slots=2), env=plugin_env(P2P_TEST_SLOW="1"))
               for i in range(3)]
    sub = cluster.start("sub", _submitter(boot), env=plugin_env())
    wait_for_workers(sub, "compute", 3)
    api = Api(sub)
    try:
        n = 60
        ids = api.submit_batch([{"type": "slowpoke", "payload": "0.1", "redundancy": 2} for _ in range(n)])
        wait_until(lambda: api.status()["tasks"]["completed"] >= 10, 60, "10 redundant tasks to complete")
        sub.kill9()
        api.close()
        sub.start().wait_started()
        api = Api(sub)
        at_restart = Counter(d["state"] for d in api.lookup(ids, results=False))
        assert at_restart["completed"] >= 10 and at_restart["completed"] < n, at_restart
        wait_for_workers(sub, "compute", 3, timeout=60)
        docs = api.wait_all(ids, timeout=120)
        assert Counter(d["state"] for d in docs) == {"completed": n}, [d["error"] for d in docs if d["error"]]
        assert all(d["result"] == "0.1" and d["redundancy"] == 2 for d in docs)
        spent = ledger_rows(sub, "spent")
        by_task: dict[str, list[str]] = {}
        for task_id, _, worker, _ in spent:
            by_task.setdefault(task_id[:REPLICA_PREFIX], []).append(worker)
        assert set(by_task) == {d["id"][:REPLICA_PREFIX] for d in docs}
        for d in docs:
            agreeing = [a["worker"] for a in d["attempts"] if a["outcome"] == "ok"]
            assert len(agreeing) == 2 and sorted(by_task[d["id"][:REPLICA_PREFIX]]) == sorted(agreeing), d
        wait_until(lambda: sum(len(ledger_rows(w, "earned")) for w in workers) == len(spent), 30,
                   "every receipt to reach its worker")
        earned = [r[0] for w in workers for r in ledger_rows(w, "earned")]
        assert len(earned) == len(set(earned)) == 2 * n
    finally:
        api.close()


def test_a_worker_that_refuses_for_credit_is_skipped_and_the_task_runs_elsewhere(cluster: Cluster) -> None:
    boot = cluster.start("boot", node_config("bootstrap"))
    strict = cluster.start("strict", worker_config(boot, ["compute"], slots=2, initial_credit=2, debt_limit=1,
                                                   debt_decay=0))
    easy = cluster.start("easy", worker_config(boot, ["compute"], slots=2))
    rider = cluster.start("rider", _submitter(boot))
    wait_for_workers(rider, "compute", 2)
    api = Api(rider)
    try:
        docs = api.wait_all(api.submit_batch([{"type": "sleep", "payload": "0.05", "max_retries": 0}
                                              for _ in range(30)]), timeout=90)
        assert Counter(d["state"] for d in docs) == {"completed": 30}, [d["error"] for d in docs]
        on_strict = [d for d in docs if d["worker"] == strict.peer_id]
        assert len(on_strict) == 3  # grant 2 + debt limit 1
        bounced = [d for d in docs if any(a["outcome"] == "refused" for a in d["attempts"])]
        assert bounced
        for d in bounced:
            refused = [a for a in d["attempts"] if a["outcome"] == "refused"]
            assert all(a["worker"] == strict.peer_id and not a["counted"] and a["reason"].startswith("busy: credit")
                       for a in refused)
            assert d["worker"] == easy.peer_id
    finally:
        api.close()
