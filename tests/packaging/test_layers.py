"""Imports go one way through the package's layers: app (and the client library) -> protocols -> stack -> core
and _ext. A module may import its own layer and the layers below it, never one above (every import counts,
also those inside functions). The client library talks to a node over HTTP and does not import the app; the app
does not import the client."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "p2p_fast"

# Lowest first. p2p_fast/__init__.py and __main__.py are the package's entry points, above every layer.
RANK = {"_ext": 0, "core": 0, "stack": 1, "protocols": 2, "app": 3, "client": 3}
APART = {frozenset({"app", "client"})}  # same rank, but neither imports the other

# Upward imports that another branch removes; each entry must still exist (a stale one fails the test below).
KNOWN: dict[tuple[str, str], str] = {}  # (file, imported module) -> why it is allowed; none today


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "p2p_fast" and parts[1] in RANK else None


def _module_name(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports_of(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # `from p2p_fast import app` names a layer in the imported names
            if name in ("p2p_fast",):
                out += [(node.lineno, f"p2p_fast.{a.name}") for a in node.names]
    return out


def upward_imports(root: Path = REPO) -> dict[tuple[str, str], str]:
    """Every import against the layering under ``root``/p2p_fast: (file, module) -> a message naming it."""
    found = {}
    for path in sorted((root / "p2p_fast").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        mine = _layer(".".join(_module_name(path, root)))
        if mine is None:
            continue
        for line, name in imports_of(path, root):
            theirs = _layer(name)
            if theirs is None or theirs == mine:
                continue
            if RANK[theirs] > RANK[mine] or frozenset({mine, theirs}) in APART:
                found[(rel, name)] = f"{rel}:{line}: {mine} imports {name} ({theirs}, a layer above or apart)"
    return found


def test_every_module_belongs_to_a_layer() -> None:
    top = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top == set(RANK), f"folders of p2p_fast/ without a layer (or layers without a folder): {top ^ set(RANK)}"


def test_imports_go_one_way() -> None:
    found = upward_imports()
    new = [msg for key, msg in sorted(found.items()) if key not in KNOWN]
    assert not new, "imports against the layering (app -> protocols -> stack -> core/_ext):\n" + "\n".join(new)


def test_known_exceptions_still_exist() -> None:
    """An entry of ``KNOWN`` whose import is gone must go too, so the list never hides a new upward import."""
    stale = [f"{path} -> {name}" for path, name in KNOWN if (path, name) not in upward_imports()]
    assert not stale, f"remove from KNOWN in {Path(__file__).name}: {stale}"


def test_the_walker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The check is only as good as its import walker: lazy and relative imports are imports too."""
    stack = tmp_path / "p2p_fast" / "stack"
    stack.mkdir(parents=True)
    (stack / "probe.py").write_text("import p2p_fast.core.config\n"
                                    "def f():\n    from p2p_fast.app import node\n    from ..protocols import presence\n"
                                    "    from . import host\n")
    found = upward_imports(tmp_path)
    assert sorted(name for _, name in found) == ["p2p_fast.app", "p2p_fast.protocols"], found
    assert all(msg.startswith("p2p_fast/stack/probe.py:") for msg in found.values())
