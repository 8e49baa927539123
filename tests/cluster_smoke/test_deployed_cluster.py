"""A deployed p2p-fast (./deploy.sh) works: pods ready, discovery by Service names, the bootstrap's identity from
its Secret, tasks through the console one-liner and the API, health and metrics."""

from __future__ import annotations

import base64
import json
import tempfile
import time
from pathlib import Path

from kube_smoke import NS, kjson, kubectl, pod_http, pods

ROLES = ("bootstrap", "relay", "worker")


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _status(pod: str) -> dict:
    code, text = pod_http(pod, "GET", "/v1/status")
    assert code == 200, text
    return json.loads(text)


def test_every_role_runs_ready_pods() -> None:
    for role in ROLES:
        items = pods(role)
        assert items, f"no pod with role={role}"
        not_ready = [p["metadata"]["name"] for p in items if not _ready(p)]
        assert not not_ready, f"not ready: {not_ready}"
        for p in items:
            c = p["spec"]["containers"][0]
            assert c["args"][:3] == ["p2p-node", "--config", "/app/config.yaml"]
            assert p["spec"]["securityContext"]["runAsUser"] == 10001


def test_services_and_dns_inside_a_pod() -> None:
    svc = {s["metadata"]["name"]: s for s in kjson("-n", NS, "get", "services")["items"]}
    assert svc["p2p-worker"]["spec"]["clusterIP"] == "None"
    worker = pods("worker")[0]["metadata"]["name"]
    code = ("import json, socket, sys; print(json.dumps({n: sorted({i[4][0] for i in socket.getaddrinfo(n, 4001, "
            "socket.AF_INET, socket.SOCK_STREAM)}) for n in sys.argv[1:]}))")
    out = kubectl("-n", NS, "exec", worker, "--", "python3", "-c", code, "p2p-bootstrap", "p2p-relay",
                  "p2p-worker").stdout
    names = json.loads(out)
    assert names["p2p-bootstrap"] == [svc["p2p-bootstrap"]["spec"]["clusterIP"]]
    assert names["p2p-relay"] == [svc["p2p-relay"]["spec"]["clusterIP"]]
    assert sorted(names["p2p-worker"]) == sorted(p["status"]["podIP"] for p in pods("worker"))


def test_bootstrap_peer_id_comes_from_its_secret() -> None:
    from libp2p.peer.id import ID

    from p2p_fast.stack.identity import load_or_create_identity

    secret = kjson("-n", NS, "get", "secret", "p2p-bootstrap-identity")
    for p in pods("bootstrap"):
        name = p["metadata"]["name"]
        key = base64.b64decode(secret["data"][f"{name}.key"])
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "identity.key").write_bytes(key)
            expected = str(ID.from_pubkey(load_or_create_identity(Path(d)).public_key))
        assert _status(name)["peer_id"] == expected


def test_workers_and_relay_are_connected_to_the_bootstrap() -> None:
    boot = pods("bootstrap")[0]["metadata"]["name"]
    want = {_status(p["metadata"]["name"])["peer_id"] for role in ("relay", "worker") for p in pods(role)}
    deadline = time.monotonic() + 60
    while True:
        code, text = pod_http(boot, "GET", "/v1/peers")
        have = {p["peer_id"] for p in json.loads(text)} if code == 200 else set()
        if want <= have or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert want <= have, f"not connected to the bootstrap: {want - have}"


def test_console_one_liner_in_a_worker_pod() -> None:
    worker = pods("worker")[0]["metadata"]["name"]
    proc = kubectl("-n", NS, "exec", "-i", worker, "--", "sh", "-c",
                   'echo "task compute test_payload" | ./p2p-node --config /app/config.yaml', timeout=120,
                   check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed by " in proc.stdout, proc.stdout


def test_task_through_the_bootstrap_api_and_health_endpoints() -> None:
    boot = pods("bootstrap")[0]["metadata"]["name"]
    code, text = pod_http(boot, "POST", "/v1/tasks?wait=30", {"type": "compute", "payload": "primes 0 100000"})
    assert code == 200, text
    doc = json.loads(text)
    assert doc["state"] == "completed" and doc["result"] == "primes[0,100000)=9592", doc
    assert doc["worker"] in {_status(p["metadata"]["name"])["peer_id"] for p in pods("worker")}
    for role in ROLES:
        pod = pods(role)[0]["metadata"]["name"]
        assert pod_http(pod, "GET", "/healthz") == (200, "ok\n")
        code, text = pod_http(pod, "GET", "/readyz")
        assert code == 200, text
        code, text = pod_http(pod, "GET", "/metrics")
        assert code == 200 and "# TYPE" in text
