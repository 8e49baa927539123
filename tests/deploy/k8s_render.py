"""Rendering k8s/ for the offline deployment tests (tests/deploy).

``kubectl kustomize`` renders each overlay (kubectl bundles kustomize and needs no cluster for it). Without
kubectl the tests that need a render skip, naming what is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("local", "production")
TARGETS = ("base", *OVERLAYS)

sys.path.insert(0, str(REPO / "tests" / "cluster"))

_renders: dict[str, list[dict[str, Any]]] = {}


def target_dir(target: str) -> Path:
    return K8S / "base" if target == "base" else K8S / "overlays" / target


def render(target: str) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` renders for base or an overlay (cached per session)."""
    if target not in _renders:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.skip("kubectl is not installed (it renders the kustomizations: kubectl kustomize)")
        proc = subprocess.run([kubectl, "kustomize", str(target_dir(target))], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"kubectl kustomize {target} failed:\n{proc.stderr}"
        _renders[target] = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    return _renders[target]


def objects(target: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in render(target) if o["kind"] == kind}
