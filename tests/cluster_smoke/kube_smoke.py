"""kubectl helpers for the smoke tests against a deployed cluster (./deploy.sh), run by ``./test.sh --cluster``, through kubectl only.

They skip, saying why, without kubectl, without a reachable cluster (current context, or ``P2P_KUBE_CONTEXT``),
or when namespace net-test has no p2p-fast StatefulSets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

NS = "net-test"
_state: dict[str, Any] = {}


def kubectl(*args: str, timeout: float = 60, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    argv = ["kubectl"]
    if os.environ.get("P2P_KUBE_CONTEXT"):
        argv += ["--context", os.environ["P2P_KUBE_CONTEXT"]]
    proc = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def kjson(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def pods(role: str) -> list[dict[str, Any]]:
    return kjson("-n", NS, "get", "pods", "-l", f"role={role}")["items"]


def pod_http(pod: str, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, str]:
    """An HTTP call to the pod's own API from inside the pod (the image has Python, no curl)."""
    code = (
        "import json, sys, urllib.request, urllib.error\n"
        "m, p, b = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "req = urllib.request.Request('http://127.0.0.1:8080' + p, method=m, data=b.encode() if b else None,\n"
        "                             headers={'content-type': 'application/json'})\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=%d)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n" % int(timeout)
    )
    proc = kubectl("-n", NS, "exec", pod, "--", "python3", "-c", code, method, path,
                   json.dumps(body) if body is not None else "", timeout=timeout + 30)
    status, _, text = proc.stdout.partition("\n")
    return int(status), text


def require_deployment() -> None:
    if "skip" not in _state:
        _state["skip"] = None
        if shutil.which("kubectl") is None:
            _state["skip"] = "kubectl is not installed"
        elif kubectl("config", "current-context", check=False).returncode != 0 and \
                not os.environ.get("P2P_KUBE_CONTEXT"):
            _state["skip"] = "kubectl has no current context (kubectl config use-context ...)"
        else:
            try:
                kubectl("version", "--request-timeout=5s", timeout=20)
            except (AssertionError, subprocess.TimeoutExpired) as exc:
                _state["skip"] = f"no reachable cluster in the current kubectl context ({str(exc)[-200:]})"
            else:
                proc = kubectl("-n", NS, "get", "statefulsets", "-o", "name", check=False)
                names = set(proc.stdout.split())
                want = {f"statefulset.apps/p2p-{r}" for r in ("bootstrap", "relay", "worker")}
                if proc.returncode != 0 or not want <= names:
                    _state["skip"] = f"p2p-fast is not deployed in namespace {NS} (./deploy.sh)"
    if _state["skip"]:
        pytest.skip(_state["skip"])
