"""``api.lean_routes`` on real nodes: the node's JSON reads, its gossip send and the task lookups are answered without
the FastAPI app ever being built (pydantic is not even loaded), with the full app's answers; every refusal (token,
query, schema, a malformed id) is still the full app's. A query parameter FastAPI ignores (``?via=app``) sends the
same request to the full app, for comparison."""

from __future__ import annotations

import httpx

from harness import mapped, node_config, wait_until

TOKEN = "lean-routes-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_reads_gossip_and_lookups_skip_the_full_app_with_its_answers(cluster, tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    http = {"listen": "127.0.0.1:0", "token_file": str(tmp_path / "token")}
    boot = cluster.start("boot", node_config("bootstrap", http=http))
    worker = cluster.start("w", node_config("worker", http=http, network={"bootstrap_peers": [boot.addr()]}))
    pid = worker.proc.pid
    with httpx.Client(base_url=worker.http, timeout=30, headers=AUTH) as c:
        wait_until(lambda: c.get("/v1/peers").json() != [], 30, "the worker connected to the bootstrap")
        status = c.get("/v1/status")
        assert status.status_code == 200 and status.headers["content-type"] == "application/json"
        assert status.json()["role"] == "worker"
        assert c.get("/v1/capabilities").json()["node"] == ["compute", "storage"]
        assert c.post("/v1/gossip", json={"text": "héllo"}).status_code == 202
        with httpx.Client(base_url=boot.http, timeout=30, headers=AUTH) as b:
            wait_until(lambda: [m["text"] for m in b.get("/v1/gossip", params={"limit": 5}).json()] == ["héllo"],
                       30, "the bootstrap received the text")
        ids = c.post("/v1/tasks/batch", json={"tasks": [{"type": "echo", "payload": "a"}]}).json()["ids"]
        unknown = "0" * 32
        looked = c.post("/v1/tasks/lookup", json={"ids": [*ids, unknown], "wait_s": 20})
        assert looked.status_code == 200
        assert [t["state"] for t in looked.json()["tasks"]] == ["completed", "unknown"]
        limits = c.get("/v1/tasks/limits").json()
        assert limits["code_over_http"] is True and limits["max_batch"] == 10000
        assert not mapped(pid, "pydantic_core"), "a plain read went through the FastAPI app"

        # The same requests through the full app: the same answers. Peers change between two requests (an
        # advertisement, a ping): the pair is asked again until they were asked of the same state.
        for path in ("/v1/peers", "/v1/capabilities", "/v1/tasks/limits"):
            wait_until(lambda: c.get(path, params={"via": "app"}).json() == c.get(path).json(), 15,
                       f"the same {path} from both paths")
        assert c.get("/v1/status", params={"via": "app"}).json().keys() == status.json().keys()
        body = {"ids": [*ids, unknown], "results": False}
        assert c.post("/v1/tasks/lookup", params={"via": "app"}, json=body).json() == \
            c.post("/v1/tasks/lookup", json=body).json()
        assert mapped(pid, "pydantic_core")

        # Every refusal is the full app's.
        r = c.post("/v1/tasks/lookup", json={"ids": ["not-an-id"]})
        assert r.status_code == 400 and r.json()["error"] == "malformed task id"
        r = c.post("/v1/tasks/lookup", json={"ids": ids, "wait_s": 61})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "wait_s"
        r = c.post("/v1/gossip", json={"text": ""})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "text"
        r = c.get("/v1/gossip", params={"limit": 0})
        assert r.status_code == 400 and "between 1 and 1000" in r.json()["error"]
    for path in ("/v1/status", "/v1/gossip"):
        r = httpx.get(worker.http + path, timeout=30)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
    r = httpx.post(worker.http + "/v1/tasks/lookup", json={"ids": ids}, timeout=30,
                   headers={"Authorization": "Bearer wrong-token-000000"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong token"


def test_a_node_only_watched_never_builds_the_full_app(cluster):
    """What a monitor or ``p2p-ctl status/peers/capabilities/gossip`` asks of a node, without a token."""
    boot = cluster.start("boot", node_config("bootstrap"))
    pid = boot.proc.pid
    for path in ("/v1/status", "/v1/peers", "/v1/capabilities", "/v1/gossip", "/v1/tasks/limits"):
        r = httpx.get(boot.http + path, timeout=30)
        assert r.status_code == 200, (path, r.text)
    assert httpx.post(boot.http + "/v1/gossip", json={"text": "x"}, timeout=30).status_code == 202
    assert httpx.get(boot.http + "/v1/tasks/limits", timeout=30).json()["code_over_http"] is False
    assert not mapped(pid, "pydantic_core")
