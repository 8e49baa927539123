"""Every distribution the package imports at run time is declared in pyproject.toml (not merely inherited from
py-libp2p's requirements), test-only ones sit in the ``test`` extra, and the installed wheel imports whole in a
fresh venv with nothing but its declared dependencies."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "p2p_fast"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(reqs: list[str]) -> set[str]:
    return {_canon(re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0]) for r in reqs}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = []
    if isinstance(handler.type, ast.Name):
        names = [handler.type.id]
    elif isinstance(handler.type, ast.Tuple):
        names = [e.id for e in handler.type.elts if isinstance(e, ast.Name)]
    return bool({"ImportError", "ModuleNotFoundError"} & set(names))


def imported_top_level(root: Path) -> dict[str, set[str]]:
    """Top-level module names imported anywhere under ``root`` (functions included) -> the files importing them.
    An import inside ``try: ... except ImportError`` is optional and not counted."""
    found: dict[str, set[str]] = {}

    def visit(node: ast.AST, path: str, optional: bool) -> None:
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for child in node.body:
                visit(child, path, True)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, path, optional)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        if not optional:
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path)
        for child in ast.iter_child_nodes(node):
            visit(child, path, optional)

    for path in sorted(root.rglob("*.py")):
        visit(ast.parse(path.read_text(), str(path)), str(path.relative_to(REPO)), False)
    return found


def _third_party(found: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: f for m, f in found.items()
            if m not in sys.stdlib_module_names and m not in ("p2p_fast", "testing", "__future__")}


def test_every_runtime_import_is_declared() -> None:
    declared = _requirement_names(PROJECT["dependencies"])
    owners = importlib.metadata.packages_distributions()
    undeclared = []
    for module, files in sorted(_third_party(imported_top_level(PACKAGE)).items()):
        dists = {_canon(d) for d in owners.get(module, [])}
        assert dists, f"{module} (imported by {sorted(files)}) belongs to no installed distribution"
        if not dists & declared:
            undeclared.append(f"{module} ({'/'.join(sorted(dists))}) imported by {sorted(files)}")
    assert not undeclared, "imported at run time but not in [project].dependencies:\n" + "\n".join(undeclared)


def test_test_only_distributions_are_in_the_test_extra() -> None:
    """What only the harnesses and tests import is not a run-time dependency, and is in the ``test`` extra."""
    owners = importlib.metadata.packages_distributions()
    runtime_modules = set(_third_party(imported_top_level(PACKAGE)))
    declared = _requirement_names(PROJECT["dependencies"])
    test_extra = _requirement_names(PROJECT["optional-dependencies"]["test"])
    harness_modules = set(_third_party(imported_top_level(REPO / "testing")))
    for module in sorted(harness_modules - runtime_modules):
        dists = {_canon(d) for d in owners.get(module, [])}
        assert dists & (test_extra | declared), f"testing/ imports {module} ({dists}): not in the test extra"
    assert "dnspython" in test_extra and "dnspython" not in declared  # only testing.testbed's DNS checks use it


@pytest.mark.slow
def test_installed_wheel_imports_whole_in_a_fresh_venv(built_wheel: Path, tmp_path: Path) -> None:
    """A fresh venv (no checkout on sys.path), the wheel installed with its declared dependencies from the index
    (pip's cache serves what it has), then every module of the installed package imported (but ``__main__``s)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, stdin=subprocess.DEVNULL)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(built_wheel)], capture_output=True,
                             text=True, timeout=1500, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert install.returncode == 0, f"pip install failed:\n{install.stdout[-2000:]}\n{install.stderr[-4000:]}"
    probe = textwrap.dedent("""
        import importlib, importlib.util, json, pkgutil, sys
        import p2p_fast, p2p_fast._ext
        names, failed = ["p2p_fast"], {}
        for mod in pkgutil.walk_packages(p2p_fast.__path__, "p2p_fast."):
            if mod.name.rsplit(".", 1)[-1] == "__main__":
                continue
            try:
                importlib.import_module(mod.name)
                names.append(mod.name)
            except Exception as exc:
                failed[mod.name] = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"file": p2p_fast.__file__, "names": names, "failed": failed,
                          "compiled": p2p_fast._ext.EXTENSIONS_ACTIVE,
                          "testing": importlib.util.find_spec("testing") is not None}))
    """)
    run = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=600, env=env,
                         cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-4000:]
    doc = __import__("json").loads(run.stdout.strip().splitlines()[-1])
    assert doc["file"].startswith(str(venv)), f"imported {doc['file']}, not the installed copy"
    assert not doc["failed"], f"modules that do not import from the installed wheel: {doc['failed']}"
    expected = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                for p in PACKAGE.rglob("*.py") if p.stem != "__main__"}
    assert expected <= set(doc["names"]), f"not found in the installed package: {sorted(expected - set(doc['names']))}"
    assert doc["compiled"], "the wheel's compiled extensions did not load"
    assert not doc["testing"], "the test harnesses (testing/) were installed"
    for script in ("p2p-node", "p2p-ctl"):
        help_ = subprocess.run([str(venv / "bin" / script), "--help"], capture_output=True, text=True, timeout=120,
                               env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert help_.returncode == 0 and "usage" in help_.stdout.lower(), help_.stderr[-2000:]
