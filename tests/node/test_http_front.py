"""``p2p_fast.app.api.front``: a node serving only probes and metrics never loads FastAPI; the first API request the
lean routes do not answer builds the full app, and from then on the probe answers are the same bytes the FastAPI routes give."""

from __future__ import annotations

import httpx

from harness import mapped, node_config, wait_until


def _answer(url: str) -> tuple[int, str, str]:
    r = httpx.get(url, timeout=10)
    return r.status_code, r.headers.get("content-type", ""), r.text


def test_probes_and_metrics_without_fastapi_then_the_full_api(cluster):
    boot = cluster.start("boot", node_config("bootstrap"))
    pid = boot.proc.pid
    healthz = _answer(boot.http + "/healthz")
    readyz = _answer(boot.http + "/readyz")
    metrics = _answer(boot.http + "/metrics")
    assert healthz == (200, "text/plain; charset=utf-8", "ok\n")
    assert readyz == (200, "text/plain; charset=utf-8", "ready\n")  # a lone bootstrap is the entry point
    assert metrics[0] == 200 and metrics[1].startswith("text/plain; version=") and "p2p_peers" in metrics[2]
    assert not mapped(pid, "pydantic_core"), "a probe or a scrape loaded pydantic (FastAPI)"

    tasks = httpx.get(boot.http + "/v1/tasks", timeout=30)  # not one of api.lean_routes: the full app
    assert tasks.status_code == 200 and tasks.json()["tasks"] == []
    assert mapped(pid, "pydantic_core")
    # Same answers, now that the full app exists; unknown paths and other methods are the full app's.
    assert _answer(boot.http + "/healthz") == healthz
    assert _answer(boot.http + "/readyz") == readyz
    assert httpx.get(boot.http + "/nope", timeout=10).json()["error"] == "Not Found"
    assert httpx.post(boot.http + "/healthz", timeout=10).status_code == 405


def test_a_keep_alive_connection_is_not_recycled_after_a_thousand_requests(cluster):
    # hypercorn's default (1000 requests per connection) made a client submitting one task at a time reconnect
    # every 1000 tasks, a TCP handshake in the middle of a round trip
    boot = cluster.start("boot", node_config("bootstrap"))
    with httpx.Client(base_url=boot.http, timeout=10) as client:
        closing = 0
        for _ in range(1100):
            r = client.get("/healthz")
            assert r.status_code == 200
            closing += r.headers.get("connection", "").lower() == "close"
    assert closing == 0
