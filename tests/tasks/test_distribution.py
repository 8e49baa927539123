"""1 bootstrap + 3 workers (separate processes) share one network for these tests: w0 and w1 offer compute and
storage, w2 compute only; w0 is "slow" for the test plugin's ``slowpoke`` type. Tasks go in through the bootstrap's
HTTP API (or a console), which has no task capability itself: every task crosses the network."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections import Counter
from typing import Any, Iterator

import httpx
import pytest
import yaml

from conftest import Api, ledger_rows, plugin_env, wait_for_workers, worker_config
from harness import REPO, Cluster, NodeProcess, node_config, wait_until


@pytest.fixture(scope="module")
def net(module_cluster: Cluster) -> Iterator[dict[str, Any]]:
    c = module_cluster
    boot = c.start("boot", node_config("bootstrap"), env=plugin_env())
    workers = [
        c.start("w0", worker_config(boot, ["compute", "storage"]), env=plugin_env(P2P_TEST_SLOW="1")),
        c.start("w1", worker_config(boot, ["compute", "storage"]), env=plugin_env()),
        c.start("w2", worker_config(boot, ["compute"]), env=plugin_env()),
    ]
    wait_for_workers(boot, "compute", 3)
    wait_for_workers(boot, "storage", 2)
    for w in workers:
        wait_for_workers(w, "storage", 1)  # storage workers see each other (replicas), w2 sees them too
    api = Api(boot)
    try:
        yield {"boot": boot, "workers": workers, "api": api, "ids": {w.peer_id: w.name for w in workers}}
    finally:
        api.close()


def test_500_tasks_all_complete_once_and_rewards_add_up(net: dict[str, Any]) -> None:
    api: Api = net["api"]
    boot: NodeProcess = net["boot"]
    before = api.ledger()
    n, reward = 500, 3
    payloads = [f"job-{i}" for i in range(n)]
    ids = api.submit_batch([{"type": "echo", "payload": p, "reward": reward} for p in payloads])
    assert len(set(ids)) == n
    docs = api.wait_all(ids, timeout=60)
    assert Counter(d["state"] for d in docs) == {"completed": n}
    assert [d["result"] for d in docs] == payloads
    used = Counter(net["ids"][d["worker"]] for d in docs)
    assert set(used) == {"w0", "w1", "w2"}, used  # spread over every worker
    # Each result counted once: one spent entry per task on the submitter, one earned entry on one worker.
    spent = {row[0]: row for row in ledger_rows(boot, "spent")}
    assert all(i in spent for i in ids)
    after = api.ledger(verify=True)
    assert after["spent"] - before["spent"] == n * reward
    assert after["verification"]["bad"] == 0

    def earned() -> list[tuple[str, str, str, int]]:
        return [r for w in net["workers"] for r in ledger_rows(w, "earned") if r[0] in set(ids)]

    wait_until(lambda: len(earned()) == n, 20, "every receipt to reach its worker")
    rows = earned()
    assert len({r[0] for r in rows}) == n  # no task credited twice
    assert sum(r[3] for r in rows) == n * reward  # workers earned exactly what was paid out
    for r in rows:
        assert spent[r[0]][2] == r[2]  # credited to the worker the submitter paid
    metrics = api.client.get("/metrics").text
    for name in ("p2p_tasks_submitted_total", "p2p_tasks_assigned_total", "p2p_tasks_completed_total",
                 "p2p_tasks_failed_total", "p2p_tasks_retried_total", "p2p_task_latency_seconds_bucket",
                 "p2p_tasks_queue_depth", 'p2p_credits{kind="spent"}'):
        assert name in metrics, name
    completed = float(metrics.split('p2p_tasks_completed_total{type="echo"} ')[1].split()[0])
    assert completed >= n
    for w in net["workers"]:
        st = Api(w)
        try:
            assert st.ledger(verify=True)["verification"]["bad"] == 0
        finally:
            st.close()


def test_compute_task_and_console_one_liner(net: dict[str, Any], tmp_path: Any) -> None:
    api: Api = net["api"]
    expected = "sha256^100000=" + _sha_rounds(b"test_payload", 100_000)
    doc = api.get(api.submit("compute", "test_payload"), wait=30)
    assert doc["state"] == "completed" and doc["result"] == expected
    doc = api.get(api.submit("compute", "primes 0 100000"), wait=30)
    assert doc["result"] == "primes[0,100000)=9592"
    # The system's own one-liner, from a node with no capabilities of its own: the task crosses the network.
    cfg = node_config("worker", node={"capabilities": []},
                      network={"bootstrap_peers": [net["boot"].addr()]})
    path = tmp_path / "client.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "p2p_fast", "--config", str(path), "--data-dir",
                           str(tmp_path / "data")], input=b"task compute test_payload\n", capture_output=True,
                          timeout=90, cwd=str(REPO))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()[-3000:]
    assert "completed by " in out and expected in out
    worker = out.split("completed by ")[1].split(":")[0]
    assert worker in net["ids"]


def test_storage_runs_only_on_storage_workers(net: dict[str, Any]) -> None:
    api: Api = net["api"]
    blobs = [f"blob number {i} " * 20 for i in range(12)]
    ids = api.submit_batch([{"type": "storage", "payload": "put " + b} for b in blobs])
    docs = api.wait_all(ids, timeout=60)
    assert all(d["state"] == "completed" for d in docs), docs
    for d, b in zip(docs, blobs):
        key = hashlib.sha256(b.encode()).hexdigest()
        assert d["result"] == f"{key} replicas=2"
        assert net["ids"][d["worker"]] in ("w0", "w1")
        assert all(net["ids"][a["worker"]] in ("w0", "w1") for a in d["attempts"])
    # Read every blob back, and nothing was ever stored on the compute-only worker.
    keys = [hashlib.sha256(b.encode()).hexdigest() for b in blobs]
    got = api.wait_all(api.submit_batch([{"type": "storage", "payload": "get " + k} for k in keys]), timeout=60)
    assert [g["result"] for g in got] == blobs
    assert all(net["ids"][g["worker"]] in ("w0", "w1") for g in got)
    w2 = net["workers"][2]
    assert not (w2.data_dir / "blobs").exists() or not any((w2.data_dir / "blobs").rglob("*"))
    for w in net["workers"][:2]:
        assert sum(1 for _ in (w.data_dir / "blobs").rglob("*") if _.is_file()) == len(blobs)  # 2 replicas each


def test_unknown_task_type_fails_fast_with_a_clear_error(net: dict[str, Any]) -> None:
    api: Api = net["api"]
    t0 = time.monotonic()
    r = api.client.post("/v1/tasks", json={"type": "nosuchtype", "payload": "x"})
    assert r.status_code == 400
    assert time.monotonic() - t0 < 5
    err = r.json()["error"]
    assert "unknown task type 'nosuchtype'" in err and "echo" in err


def test_timeout_retries_elsewhere_and_exhausted_retries_fail_with_every_reason(net: dict[str, Any]) -> None:
    api: Api = net["api"]
    names = net["ids"]
    # slowpoke sleeps 20 s on w0 only: with a 1 s timeout w0's attempts time out (its process is killed) and the
    # task completes on another worker.
    ids = api.submit_batch([{"type": "slowpoke", "payload": "20", "timeout_s": 1.0, "max_retries": 3}
                            for _ in range(9)])
    docs = api.wait_all(ids, timeout=60)
    assert all(d["state"] == "completed" for d in docs), [d["error"] for d in docs]
    retried = [d for d in docs if len(d["attempts"]) > 1]
    assert retried, "no task was first sent to the slow worker"
    for d in docs:
        first, last = d["attempts"][0], d["attempts"][-1]
        assert last["outcome"] == "ok" and names[last["worker"]] != "w0"
        if len(d["attempts"]) > 1:
            assert names[first["worker"]] == "w0" and first["outcome"] == "timeout"
            assert "timed out after 1 s" in first["reason"]
    # sleep 30 with a 0.5 s timeout can never finish: 1 + 2 retries, all timed out, on three different workers.
    t0 = time.monotonic()
    doc = api.get(api.submit("sleep", "30", timeout_s=0.5, max_retries=2), wait=30)
    assert doc["state"] == "failed"
    assert time.monotonic() - t0 < 20
    assert [a["outcome"] for a in doc["attempts"]] == ["timeout"] * 3
    assert len({a["worker"] for a in doc["attempts"]}) == 3
    assert doc["error"].startswith("failed after 3 attempt(s)")
    for a in doc["attempts"]:
        assert a["worker"] in doc["error"] and "timed out after 0.5 s" in a["reason"]
    # Reputation recorded the timeouts.
    rep = api.ledger()["reputation"]
    assert rep[net["workers"][0].peer_id]["timeouts"] >= len(retried)


def test_cancel_stops_the_running_task(net: dict[str, Any]) -> None:
    api: Api = net["api"]
    task_id = api.submit("sleep", "30", timeout_s=60)
    wait_until(lambda: api.get(task_id)["state"] == "running", 10, "the task to run")
    worker = next(w for w in net["workers"] if w.peer_id == api.get(task_id)["worker"])
    wait_until(lambda: worker.status()["tasks"]["worker_running"] == 1, 10, "the worker to run it")
    r = api.client.post(f"/v1/tasks/{task_id}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    wait_until(lambda: worker.status()["tasks"]["worker_running"] == 0, 10, "the worker to stop it")
    assert api.client.post(f"/v1/tasks/{task_id}/cancel").status_code == 409


def test_bad_api_input_is_4xx_json_and_the_node_is_unaffected(net: dict[str, Any]) -> None:
    api: Api = net["api"]
    c: httpx.Client = api.client
    cases: list[tuple[str, str, Any, int]] = [
        ("post", "/v1/tasks", {"type": 5, "payload": "x"}, 422),
        ("post", "/v1/tasks", {"type": "echo", "payload": ["x"]}, 422),
        ("post", "/v1/tasks", {"type": "echo", "payload": "x", "timeout_s": "5"}, 422),
        ("post", "/v1/tasks", {"type": "echo", "payload": "x", "timeout_s": -1}, 422),
        ("post", "/v1/tasks", {"type": "echo", "payload": "x", "max_retries": 1.5}, 422),
        ("post", "/v1/tasks", {"type": "echo", "payload": "x", "reward": -3}, 422),
        ("post", "/v1/tasks", {"type": "echo", "payload": "x", "priority": 1}, 422),
        ("post", "/v1/tasks", {"payload": "x"}, 422),
        ("post", "/v1/tasks", {"type": "Echo!", "payload": "x"}, 422),
        ("post", "/v1/tasks", {"type": "echo", "payload": "%%%", "payload_encoding": "base64"}, 422),
        ("post", "/v1/tasks", [1, 2, 3], 422),
        ("post", "/v1/tasks/batch", {"tasks": []}, 422),
        ("post", "/v1/tasks/batch", {"tasks": [{"type": "echo"}], "extra": True}, 422),
        ("post", "/v1/tasks/lookup", {"ids": ["nothex"]}, 400),
        ("get", "/v1/tasks/not-a-task-id", None, 400),
        ("get", "/v1/tasks/" + "0" * 32, None, 404),
        ("get", "/v1/tasks/" + "0" * 32 + "?wait=abc", None, 422),
        ("get", "/v1/tasks?state=bogus", None, 422),
        ("get", "/v1/tasks?limit=0", None, 422),
        ("post", "/v1/tasks/" + "0" * 32 + "/cancel", None, 404),
    ]
    for method, path, body, code in cases:
        r = c.request(method, path, json=body) if body is not None else c.request(method, path)
        assert r.status_code == code, (path, body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), (path, r.headers)
        assert "error" in r.json(), r.text
    # Not JSON at all, and a body over the node's size limit.
    r = c.post("/v1/tasks", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    # (Own connection: the server answers 413 before reading the body and then closes the connection.)
    r = httpx.post(api.node.http + "/v1/tasks", content=b'{"type":"echo","payload":"' + b"x" * (2 * 1024 * 1024)
                   + b'"}', headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "error" in r.json()
    # The node goes on: health, OpenAPI, and a real task.
    assert c.get("/healthz").status_code == 200
    spec = c.get("/openapi.json").json()
    assert "/v1/tasks" in spec["paths"] and "/v1/tasks/{task_id}" in spec["paths"]
    doc = api.get(api.submit("echo", "still here"), wait=20)
    assert doc["state"] == "completed" and doc["result"] == "still here"


def _sha_rounds(data: bytes, rounds: int) -> str:
    for _ in range(rounds):
        data = hashlib.sha256(data).digest()
    return data.hex()


def test_p2p_ctl_talks_to_the_node(net: dict[str, Any]) -> None:
    boot: NodeProcess = net["boot"]

    def ctl(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "p2p_fast.app.ctl", "--data-dir", str(boot.data_dir), *argv],
                              capture_output=True, text=True, timeout=120, cwd=str(REPO))

    r = ctl("submit", "echo", "hello", "world")
    assert r.returncode == 0 and "completed by" in r.stdout and r.stdout.strip().endswith("hello world"), r
    r = ctl("submit", "echo", "x", "--count", "300")
    assert r.returncode == 0 and "300 of 300 completed" in r.stdout, r
    assert "300/300 done" in r.stderr  # the progress bar's last line
    r = ctl("submit", "sleep", "0", "--no-wait")
    assert r.returncode == 0
    task_id = r.stdout.strip()
    r = ctl("watch", task_id)
    assert r.returncode == 0 and "slept 0 s" in r.stdout, r
    r = ctl("submit", "nosuchtype", "x")
    assert r.returncode == 1 and "unknown task type" in r.stderr
    r = ctl("status")
    assert r.returncode == 0 and "ledger: balance" in r.stdout and "tasks: pending" in r.stdout, r
    r = ctl("peers")
    assert r.returncode == 0 and ("3 peer(s)" in r.stdout or "4 peer(s)" in r.stdout), r
    r = ctl("ledger", "--verify")
    assert r.returncode == 0 and "0 bad" in r.stdout, r
    r = ctl("--api", "http://127.0.0.1:9", "status")
    assert r.returncode == 2 and "cannot reach" in r.stderr
