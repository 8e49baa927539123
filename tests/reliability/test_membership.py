"""Who belongs: the private network's key, the API's bearer token, and which peers a worker runs tasks for (and how
fast). Real node processes on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness import REPO, Cluster, node_config, record, wait_until
from reliability_kit import Api, check_exactly_once, metric, wait_for

from p2p_fast.core.config import ConfigError, load_config_text
from p2p_fast.app.api.token import BearerAuth, load_api_token


def _peer_ids(node) -> set[str]:
    return {p["peer_id"] for p in node.peers()}


def test_without_the_key_no_connection_completes_and_a_wrong_key_is_named(cluster: Cluster, tmp_path: Path) -> None:
    key = secrets.token_hex(32)
    (tmp_path / "swarm.key").write_text(f"/key/swarm/psk/1.0.0/\n/base16/\n{key}\n")
    (tmp_path / "other.key").write_text(secrets.token_hex(32))
    boot = cluster.start("boot", node_config("bootstrap", network={"psk_file": str(tmp_path / "swarm.key")}))
    quick = {"connection_timeout": 4}
    nodes = [
        # A member, with the key from the environment (P2P_PSK overrides network.psk_file).
        cluster.add("member", node_config("worker", network={"bootstrap_peers": [boot.addr()], **quick}),
                    env={"P2P_PSK": key}),
        cluster.add("nokey", node_config("worker", network={"bootstrap_peers": [boot.addr()], **quick})),
        # Another key, dialing the bootstrap's bare address (the ID is learned by a handshake first) ...
        cluster.add("wrong", node_config("worker", network={"bootstrap_peers": [boot.addr(with_id=False)],
                                                            "psk_file": str(tmp_path / "other.key"), **quick})),
        # ... and with its ID (the swarm's own dial).
        cluster.add("wrongid", node_config("worker", network={"bootstrap_peers": [boot.addr()],
                                                              "psk_file": str(tmp_path / "other.key"), **quick})),
    ]
    member, nokey, wrong, wrongid = [n.start() for n in nodes]
    for n in nodes:
        n.wait_started()
    wait_until(lambda: boot.peer_id in _peer_ids(member), 30, "the member to join")
    assert httpx.get(member.http + "/readyz", timeout=5).status_code == 200
    # The dialing side names the problem: a handshake failure counted as psk-mismatch, and a warning saying what
    # to fix.
    # What the dialer sees depends on the noise it decrypts: a failed negotiation at once, or a stalled one.
    for n in (wrong, wrongid):
        wait_for(lambda n=n: _psk_reports(n) >= 1, 30, f"{n.name} to report a PSK mismatch", dump=n.stderr)
        assert "private network (PSK) and the peer has no key or another one" in n.stderr()
    wait_until(lambda: metric(nokey.get("/metrics"), "p2p_dial_failures_total") >= 1, 30,
               "the node without a key to give up its first dial")
    # No connection of the outsiders ever completed: they have no peers, are not ready, and the bootstrap only
    # knows the member.
    intruder_peers = {n.name: n.status()["peers"] for n in (nokey, wrong, wrongid)}
    for n in (nokey, wrong, wrongid):
        assert intruder_peers[n.name] == 0, n.name
        assert httpx.get(n.http + "/readyz", timeout=5).status_code == 503
        assert n.peer_id not in _peer_ids(boot)
    assert _peer_ids(boot) == {member.peer_id}
    # Inside the private network gossip flows as usual.
    mark = len(boot.lines)
    member.command("gossip members-only")
    boot.wait_output(rf"\[gossip\] {member.peer_id}: members-only$", start=mark)
    record("psk", intruders=3, intruder_peers=sum(intruder_peers.values()),
           psk_mismatch_reports=int(sum(_psk_reports(n) for n in (wrong, wrongid))))


def _psk_reports(node) -> float:
    text = node.get("/metrics")
    return sum(metric(text, "p2p_handshake_failures_total", reason=r) for r in ("psk-mismatch", "handshake-timeout"))


def test_api_token_guards_everything_but_probes_and_is_never_logged(cluster: Cluster, tmp_path: Path) -> None:
    token = secrets.token_hex(24)
    (tmp_path / "token").write_text(token + "\n")
    boot = cluster.start("boot", node_config("bootstrap", http={"listen": "127.0.0.1:0",
                                                                "token_file": str(tmp_path / "token"),
                                                                "metrics_public": False}))
    with httpx.Client(base_url=boot.http, timeout=10) as c:
        for path in ("/healthz", "/readyz"):
            assert c.get(path).status_code == 200, path
        tried = 0
        refused_401 = 0
        for method, path in [("GET", "/v1/status"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                             ("GET", "/v1/tasks"), ("POST", "/v1/tasks"), ("POST", "/v1/tasks/batch"),
                             ("GET", "/v1/ledger"), ("POST", "/v1/gossip"), ("GET", "/nope")]:
            for headers in ({}, {"Authorization": "Bearer " + token[:-1] + "x"},
                            {"Authorization": "Basic " + token}, {"Authorization": "Bearer"},
                            {"Authorization": "bearer " + token + "x"}):
                r = c.request(method, path, headers=headers, json={"type": "echo", "payload": "x"})
                tried += 1
                refused_401 += r.status_code == 401
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.json()["error"] == "unauthorized"
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert token not in r.text
        auth = {"Authorization": f"Bearer {token}"}
        assert c.get("/v1/status", headers=auth).status_code == 200
        assert c.get("/metrics", headers=auth).status_code == 200
        r = c.post("/v1/tasks", headers=auth, params={"wait": 5}, json={"type": "echo", "payload": "x"})
        assert r.status_code in (200, 202, 400), r.text  # no worker here: the token was accepted, that is all
        refused = metric(c.get("/metrics", headers=auth).text, "p2p_api_unauthorized_total")
        assert refused >= tried
    _own_clients_send_the_token(boot, token, tmp_path)
    boot.stop()
    token_in_logs = boot.stderr().count(token) + "\n".join(boot.lines).count(token)
    assert token_in_logs == 0
    # A token that is too short stops start-up (exit 2) naming the key, without echoing the token.
    (tmp_path / "short").write_text("abc")
    cfg = node_config("bootstrap", http={"listen": "127.0.0.1:0", "token_file": str(tmp_path / "short")})
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "p2p_fast", "--config", str(tmp_path / "short.yaml"), "--data-dir",
                           str(tmp_path / "d2"), "--console", "off"], capture_output=True, text=True, timeout=60,
                          cwd=str(REPO))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "http.token_file" in proc.stderr and "at least 16 characters" in proc.stderr
    record("api_token", unauthorized_requests=tried, accepted_without_token=tried - refused_401,
           token_in_logs=token_in_logs)


def _own_clients_send_the_token(boot: Any, token: str, tmp_path: Path) -> None:
    """p2p-ctl (token from --token-file or P2P_API_TOKEN) and a second p2p-node on the running node's data dir
    (token from its config) get through; p2p-ctl without a token is told what is missing."""
    env = {k: v for k, v in os.environ.items() if k != "P2P_API_TOKEN"}

    def ctl(*argv: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "p2p_fast.app.ctl", "--data-dir", str(boot.data_dir), *argv],
                              capture_output=True, text=True, timeout=60, cwd=str(REPO), env={**env, **extra_env})

    r = ctl("status")
    assert r.returncode == 1 and "401" in r.stderr and "--token-file" in r.stderr, r.stderr
    assert token not in r.stderr
    r = ctl("--token-file", str(tmp_path / "token"), "status")
    assert r.returncode == 0 and "bootstrap" in r.stdout, r.stderr
    r = ctl("status", P2P_API_TOKEN=token)
    assert r.returncode == 0 and "bootstrap" in r.stdout, r.stderr
    r = ctl("--token-file", str(tmp_path / "missing"), "status")
    assert r.returncode == 2 and "missing" in r.stderr, r.stderr
    (tmp_path / "boot.yaml").write_text(yaml.safe_dump(boot.config))
    proc = subprocess.run([sys.executable, "-m", "p2p_fast", "--config", str(tmp_path / "boot.yaml"), "--data-dir",
                           str(boot.data_dir)], input="status\n", capture_output=True, text=True, timeout=60,
                          cwd=str(REPO), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert boot.peer_id in proc.stdout and token not in proc.stdout + proc.stderr


def test_token_sources_and_constant_time_middleware(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit level: where the token comes from, and the middleware on its own (no node)."""
    import trio

    (tmp_path / "t").write_text("  from-the-file-0123456789  \n")
    cfg = load_config_text(f"http: {{token_file: {tmp_path / 't'}}}")
    monkeypatch.delenv("P2P_API_TOKEN", raising=False)
    assert load_api_token(cfg) == "from-the-file-0123456789"
    monkeypatch.setenv("P2P_API_TOKEN", "from-the-environment-42")
    assert load_api_token(cfg) == "from-the-environment-42"
    monkeypatch.delenv("P2P_API_TOKEN")
    assert load_api_token(load_config_text("")) is None
    with pytest.raises(ConfigError, match="cannot read"):
        load_api_token(load_config_text(f"http: {{token_file: {tmp_path / 'missing'}}}"))
    (tmp_path / "spaced").write_text("has a space inside it 0123")
    with pytest.raises(ConfigError, match="no spaces"):
        load_api_token(load_config_text(f"http: {{token_file: {tmp_path / 'spaced'}}}"))

    calls: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    auth = BearerAuth(app, "s3cret-s3cret-s3cret", metrics_public=True)

    async def status(path: str, header: bytes | None) -> int:
        sent: list[dict] = []

        async def send(msg):  # type: ignore[no-untyped-def]
            sent.append(msg)

        headers = [(b"authorization", header)] if header is not None else []
        await auth({"type": "http", "path": path, "headers": headers}, None, send)
        return sent[0]["status"]

    async def main() -> None:
        assert await status("/healthz", None) == 200
        assert await status("/metrics", None) == 200
        assert await status("/v1/status", None) == 401
        assert await status("/v1/status", b"Bearer s3cret-s3cret-s3cre") == 401
        assert await status("/v1/status", b"Bearer s3cret-s3cret-s3cret") == 200
        assert await status("/v1/status", b"BEARER s3cret-s3cret-s3cret") == 200  # the scheme is case-insensitive
        sent: list[dict] = []

        async def send(msg):  # type: ignore[no-untyped-def]
            sent.append(msg)

        await auth({"type": "websocket", "path": "/v1/anything", "headers": []}, None, send)
        assert sent == [{"type": "websocket.close", "code": 1008}]  # a websocket needs the token too

    trio.run(main)
    assert calls == ["/healthz", "/metrics", "/v1/status", "/v1/status"]


def test_worker_runs_only_allowed_submitters_and_rate_limits_each(cluster: Cluster) -> None:
    boot = cluster.start("boot", node_config("bootstrap"))  # the allowed submitter (no task capability itself)
    rate, burst = 40.0, 20
    stranger = cluster.add("stranger", node_config("worker", node={"capabilities": []},
                                                   network={"bootstrap_peers": [boot.addr()]}))
    w = cluster.add("w", node_config("worker", node={"capabilities": ["compute"]},
                                     network={"bootstrap_peers": [boot.addr()]},
                                     tasks={"allowed_submitters": [boot.peer_id], "submit_rate": rate,
                                            "submit_burst": burst}))
    stranger.start(), w.start()
    stranger.wait_started(), w.wait_started()
    for n in (boot, stranger):
        wait_until(lambda n=n: httpx.get(n.http + "/v1/capabilities", timeout=5).json()["network"].get("compute"),
                   40, f"{n.name} to see the worker")
    n = 120
    with Api(boot) as api, Api(stranger) as other:
        t0 = time.monotonic()
        ids = api.submit_batch([{"type": "echo", "payload": f"t{i}", "max_retries": 2} for i in range(n)])
        refused_ids = other.submit_batch([{"type": "echo", "payload": "let me in", "max_retries": 1}
                                          for _ in range(5)])
        docs = api.wait_all(ids, timeout=60)
        elapsed = time.monotonic() - t0
        figures = check_exactly_once(docs, boot, [w])
        assert figures["completed"] == n
        # Over the burst the worker answered "busy": no attempt was counted, the submitter just waited its turn.
        assert elapsed >= (n - burst) / rate * 0.8, elapsed
        assert all(len(d["attempts"]) == 1 for d in docs)
        refused = other.wait_all(refused_ids, timeout=30)
        assert {d["state"] for d in refused} == {"failed"}
        for d in refused:
            assert f"does not run tasks of {stranger.peer_id}" in d["error"], d["error"]
        assert other.ledger()["spent"] == 0
    text = w.get("/metrics")
    limited = metric(text, "p2p_messages_rejected_total", topic="/p2p-network/task/1.0.0", reason="rate-limited")
    not_allowed = metric(text, "p2p_messages_rejected_total", topic="/p2p-network/task/1.0.0", reason="not-allowed")
    assert limited >= 1 and not_allowed == 10, (limited, not_allowed)  # 5 tasks x 2 attempts
    record("allowlist_and_rate_limit", tasks=n + 5, completed=figures["completed"],
           refused_not_allowed=int(not_allowed), rate_limited_answers=int(limited), seconds=round(elapsed, 1),
           lost=figures["lost"])
