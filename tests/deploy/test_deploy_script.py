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
    out = os.environ.get("FAKE_CONTEXT", "kind-test") + "\n"
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

# Stand-ins for kind, minikube and the engines: each call is logged; FAKE_IMAGES lists the images the engine named
# by FAKE_ENGINE has; `save -o FILE` writes FILE, and kind/minikube record whether the archive they got exists.
FAKE_TOOL = r'''#!/usr/bin/env python3
import json, os, sys
tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
entry = {"tool": tool, "args": args}
rc = 0
images = os.environ.get("FAKE_IMAGES", "").split()
if tool in ("podman", "docker"):
    mine = os.environ.get("FAKE_ENGINE") == tool
    if args[:2] in (["image", "exists"], ["image", "inspect"]):
        rc = 0 if mine and args[2] in images else 1
    elif args[:1] == ["info"]:
        rc = 0 if mine else 1
    elif args[:1] == ["save"] and mine:
        open(args[args.index("-o") + 1], "w").write("archive of " + args[-1])
    else:
        rc = 1
else:
    entry["files"] = {a: open(a).read() for a in args if a.endswith(".tar") and os.path.exists(a)}
    if tool == "minikube" and args[:2] == ["profile", "list"]:
        print(json.dumps({"valid": [{"Name": "dev-profile"}]}))
with open(os.environ["FAKE_TOOLS_LOG"], "a") as fh:
    fh.write(json.dumps(entry) + "\n")
sys.exit(rc)
'''


def _tools(env: dict[str, str]) -> list[dict]:
    path = Path(env["FAKE_TOOLS_LOG"])
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, str]:
    real = shutil.which("kubectl")
    if real is None:
        pytest.skip("kubectl is not installed (deploy.sh renders with kubectl kustomize)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "kubectl").write_text(FAKE_KUBECTL)
    (bindir / "kubectl").chmod(0o755)
    for tool in ("kind", "minikube", "podman", "docker"):
        (bindir / tool).write_text(FAKE_TOOL)
        (bindir / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "REAL_KUBECTL": real,
            "FAKE_KUBECTL_STATE": str(tmp_path / "state.json"), "FAKE_TOOLS_LOG": str(tmp_path / "tools.jsonl"),
            "FAKE_CONTEXT": "kind-test", "FAKE_IMAGES": "localhost/p2p-fast:latest", "FAKE_ENGINE": "podman"}


def _run(env: dict[str, str], *args: str, expect: int = 0) -> dict:
    proc = subprocess.run([str(REPO / "deploy.sh"), *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == expect, proc.stdout + proc.stderr
    state = json.loads(Path(env["FAKE_KUBECTL_STATE"]).read_text())
    state["stderr"] = proc.stderr
    return state


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


def test_kind_context_gets_the_podman_image_loaded_before_apply(fake: dict[str, str]) -> None:
    state = _run(fake, "local")
    loads = [t for t in _tools(fake) if t["tool"] == "kind"]
    assert len(loads) == 1 and loads[0]["args"][:2] == ["load", "image-archive"], loads
    assert loads[0]["args"][-2:] == ["--name", "test"]
    assert list(loads[0]["files"].values()) == ["archive of localhost/p2p-fast:latest"]  # podman save's archive
    assert "loaded localhost/p2p-fast:latest into kind cluster test (kind load image-archive from podman save)" in (
        state["stderr"])
    assert "applied" in state


def test_kind_with_docker_loads_by_name(fake: dict[str, str]) -> None:
    _run({**fake, "FAKE_ENGINE": "docker"}, "local")
    (load,) = [t for t in _tools(fake) if t["tool"] == "kind"]
    assert load["args"] == ["load", "docker-image", "localhost/p2p-fast:latest", "--name", "test"]


@pytest.mark.parametrize("context, profile", [("minikube", "minikube"), ("dev-profile", "dev-profile")])
def test_minikube_contexts_load_with_minikube_image_load(fake: dict[str, str], context: str, profile: str) -> None:
    state = _run({**fake, "FAKE_CONTEXT": context}, "local")
    loads = [t for t in _tools(fake) if t["tool"] == "minikube" and "image" in t["args"]]
    assert len(loads) == 1 and loads[0]["args"][:4] == ["-p", profile, "image", "load"], loads
    assert list(loads[0]["files"].values()) == ["archive of localhost/p2p-fast:latest"]
    assert f"into minikube cluster {profile}" in state["stderr"]


def test_no_load_elsewhere_and_a_missing_local_image_stops_the_deploy(fake: dict[str, str]) -> None:
    state = _run({**fake, "FAKE_CONTEXT": "gke_prod"}, "local")
    assert not [t for t in _tools(fake) if t["tool"] in ("kind", "minikube") and "load" in t["args"]]
    assert "is neither kind nor minikube" in state["stderr"]
    applied = len(state["applied"])
    state = _run({**fake, "FAKE_CONTEXT": "gke_prod"}, "local", "--load", expect=1)
    assert "--load knows kind and minikube contexts, not 'gke_prod'" in state["stderr"]
    state = _run({**fake, "FAKE_IMAGES": ""}, "local", expect=1)
    assert "image localhost/p2p-fast:latest is not built here" in state["stderr"] and "./build.sh" in state["stderr"]
    assert len(state["applied"]) == applied  # both stopped before anything was applied
    _run({**fake, "FAKE_IMAGES": ""}, "local", "--no-load")  # the user loaded it some other way
