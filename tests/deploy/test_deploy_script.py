"""./deploy.sh's flow against a stand-in kubectl that records every call (no cluster can run here): render,
namespace, the identity Secret created once with a key per bootstrap pod (then only topped up), apply, rollout
waits, status; --image retags; --delete."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from k8s_render import REPO

FAKE_KUBECTL = r'''#!/usr/bin/env python3
import fcntl, json, os, subprocess, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "apply" in args and "-" in args else None  # before the lock: pipes run at once
state_path = os.environ["FAKE_KUBECTL_STATE"]
lock = open(state_path + ".lock", "w")
fcntl.flock(lock, fcntl.LOCK_EX)
state = json.load(open(state_path)) if os.path.exists(state_path) else {"calls": [], "secret": None}
state["calls"].append(args)
out, rc = "", 0
if args and args[0] == "kustomize":
    proc = subprocess.run([os.environ["REAL_KUBECTL"], *args], capture_output=True, text=True)
    out, rc = proc.stdout, proc.returncode
    sys.stderr.write(proc.stderr)
elif args[:2] == ["config", "current-context"]:
    out = "kind-test\n"
elif args and args[0] == "version":
    out = "ok\n"
elif args[:2] == ["create", "namespace"]:
    out = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: net-test\n"
elif "apply" in args:
    stdin = stdin if stdin is not None else open(args[args.index("-f") + 1]).read()
    state.setdefault("applied", []).append(stdin)
elif "secret" in args and "get" in args:
    if state["secret"] is None:
        rc = 1
    elif any(a.startswith("jsonpath=") for a in args):
        key = [a for a in args if a.startswith("jsonpath=")][0].split(".data.")[1].rstrip("}").replace("\\.", ".")
        out = state["secret"].get(key, "")
elif "secret" in args and "create" in args:
    state["secret"] = {}
    for a in args:
        if a.startswith("--from-file="):
            key, path = a[len("--from-file="):].split("=", 1)
            state["secret"][key] = __import__("base64").b64encode(open(path, "rb").read()).decode()
elif "secret" in args and "patch" in args:
    state["secret"].update(json.loads(args[args.index("-p") + 1])["data"])
elif "exec" in args:
    out = "role:         bootstrap\nready:        yes\n"
json.dump(state, open(state_path, "w"))
sys.stdout.write(out)
sys.exit(rc)
'''


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, str]:
    real = shutil.which("kubectl")
    if real is None:
        pytest.skip("kubectl is not installed (deploy.sh renders with kubectl kustomize)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "kubectl").write_text(FAKE_KUBECTL)
    (bindir / "kubectl").chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "REAL_KUBECTL": real,
            "FAKE_KUBECTL_STATE": str(tmp_path / "state.json")}


def _run(env: dict[str, str], *args: str) -> dict:
    proc = subprocess.run([str(REPO / "deploy.sh"), *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(Path(env["FAKE_KUBECTL_STATE"]).read_text())


def test_deploy_creates_the_secret_once_applies_and_waits(fake: dict[str, str]) -> None:
    state = _run(fake, "production")
    calls = [" ".join(c) for c in state["calls"]]
    secret = state["secret"]
    assert sorted(secret) == ["p2p-bootstrap-0.key", "p2p-bootstrap-1.key"]  # production runs 2 bootstraps
    for key in secret.values():
        raw = base64.b64decode(key)
        assert raw[:4] == b"\x08\x01\x12\x20" and len(raw) == 36
    applied = state["applied"][-1]
    assert "kind: StatefulSet" in applied and "registry.example.com/p2p-fast:0.1.0" in applied
    for sts in ("p2p-bootstrap", "p2p-relay", "p2p-worker"):
        assert any(c.startswith(f"-n net-test rollout status statefulset/{sts}") for c in calls), calls
    assert calls.index(next(c for c in calls if "create secret" in c)) < calls.index(
        next(c for c in calls if c.startswith("apply -f /")))  # the Secret exists before the pods want it

    # A second deploy keeps the keys; a third with more bootstraps would only add keys.
    before = dict(secret)
    state = _run(fake, "local", "--image", "registry.example.com/p2p-fast:9.9")
    assert state["secret"] == before
    assert "image: registry.example.com/p2p-fast:9.9" in state["applied"][-1]


def test_delete_keeps_the_identity_unless_purged(fake: dict[str, str]) -> None:
    _run(fake, "local")
    state = _run(fake, "--delete", "local")
    calls = [" ".join(c) for c in state["calls"]]
    assert any(c.startswith("delete --ignore-not-found") for c in calls)
    assert not any("delete --ignore-not-found secret" in c for c in calls)
    state = _run(fake, "--delete", "--purge", "local")
    assert any("delete --ignore-not-found secret p2p-bootstrap-identity" in " ".join(c) for c in state["calls"])
