"""``POST /v1/tasks/batch`` through ``api.fast_submit`` on a real node: a plainly valid batch is accepted without the
FastAPI app ever being built (pydantic is not even loaded), refusals the task service makes are answered there with
the full app's JSON, and every other refusal (token, size, schema, code without a token) is still the full app's."""

from __future__ import annotations

import base64

import httpx

from harness import mapped, node_config

TOKEN = "fast-submit-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_valid_batches_skip_the_full_app_and_refusals_keep_its_answers(cluster, tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    http = {"listen": "127.0.0.1:0", "token_file": str(tmp_path / "token"), "max_body_bytes": 4096}
    node = cluster.start("w", node_config("worker", http=http))
    pid = node.proc.pid
    with httpx.Client(base_url=node.http, timeout=30, headers=AUTH) as c:
        r = c.post("/v1/tasks/batch", json={"tasks": [{"type": "echo", "payload": "hello"},
                                                      {"type": "echo", "payload": base64.b64encode(b"world").decode(),
                                                       "payload_encoding": "base64", "timeout_s": 30}]})
        assert r.status_code == 202 and r.headers["content-type"] == "application/json", r.text
        ids = r.json()["ids"]
        assert len(ids) == 2 and all(len(i) == 32 for i in ids)
        # Refused by the task service: answered on the same path, with the full app's JSON.
        r = c.post("/v1/tasks/batch", json={"tasks": [{"type": "nosuchtype", "payload": "x"}]})
        assert r.status_code == 400 and "unknown task type" in r.json()["error"], r.text
        r = c.post("/v1/tasks/batch", json={"tasks": [{"type": "compute", "payload": "%%%",
                                                       "payload_encoding": "base64"}]})
        assert r.status_code == 422 and r.json() == {"error": "payload is not valid base64"}
        assert not mapped(pid, "pydantic_core"), "a plainly valid batch went through the FastAPI app"

        # Everything else is the full app's answer.
        r = c.post("/v1/tasks/batch", json={"tasks": [{"type": "compute", "payload": "1", "timeout_s": -1}]})
        assert r.status_code == 422 and r.json()["error"] == "invalid request", r.text
        assert [d["field"] for d in r.json()["detail"]] == ["tasks.0.timeout_s"]
        assert mapped(pid, "pydantic_core")
        r = c.post("/v1/tasks/batch", json={"tasks": [{"type": "compute"}], "extra": 1})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "extra"
        r = c.post("/v1/tasks/batch", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == "invalid request"
        # Both tasks of the first batch ran (the full app's own routes see what the fast path accepted).
        for task_id in ids:
            doc = c.get(f"/v1/tasks/{task_id}", params={"wait": 20}).json()
            assert doc["state"] == "completed", doc
        assert {c.get(f"/v1/tasks/{i}").json()["result"] for i in ids} == {"hello", "world"}

    valid = {"tasks": [{"type": "compute", "payload": "1"}]}
    r = httpx.post(node.http + "/v1/tasks/batch", json=valid, timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.post(node.http + "/v1/tasks/batch", json=valid, headers={"Authorization": "Bearer wrong-token-000000"},
                   timeout=30)
    assert r.status_code == 401 and r.json()["detail"] == "wrong token"
    big = {"tasks": [{"type": "compute", "payload": "x" * 5000}]}
    r = httpx.post(node.http + "/v1/tasks/batch", json=big, headers=AUTH, timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_functions_without_a_token_are_still_refused(cluster):
    node = cluster.start("w", node_config("worker", tasks={"accept_functions": True}))
    r = httpx.post(node.http + "/v1/tasks/batch", json={"tasks": [{"type": "function", "payload": "gAQu",
                                                                   "payload_encoding": "base64"}]}, timeout=30)
    assert r.status_code == 403 and "token" in r.json()["error"], r.text
    r = httpx.post(node.http + "/v1/tasks/batch", json={"tasks": [{"type": "compute", "payload": "2+2"}]}, timeout=30)
    assert r.status_code == 202 and len(r.json()["ids"]) == 1
