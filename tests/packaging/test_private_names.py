"""No module of p2p_fast uses another object's private names: ``obj._name`` (or ``getattr(obj, "_name")``) is a
failure naming file:line, unless the object is ``self``/``cls``/``super()`` (a class and its bases), the name is a
dunder, or the module defines that name itself (a module's private names are its own business).

py-libp2p's private state is read in one place, ``p2p_fast/stack/libp2p_internals.py``, and changed only by the
patch modules in ``p2p_fast/stack/patches/``; both are outside this check (the first is what it points to, the
second is what patches are for). Generated protobuf modules (``*_pb2.py``) are not ours to edit."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "p2p_fast"
EXEMPT_DIRS = ("p2p_fast/stack/patches/",)
EXEMPT_FILES = ("p2p_fast/stack/libp2p_internals.py",)

# (file, private name) -> why it is allowed. Keep it short: an entry is a debt, not a convenience.
ALLOWED: dict[tuple[str, str], str] = {
    ("p2p_fast/protocols/tasks/_child.py", "_exit"):
        "os._exit: the documented standard-library call that leaves a forked child without running its parent's "
        "clean-up; not private despite the underscore",
    ("p2p_fast/stack/muxer.py", "_finalize_stream"):
        "FastYamuxStream asks its connection (stock Yamux's method) to finalize it, exactly where stock "
        "YamuxStream.read does; the subclass pair replaces py-libp2p's read path (docs/libp2p-patches.md, "
        "'Not patches')",
    ("p2p_fast/stack/muxer.py", "_owns_backlog_slot"):
        "FastYamux.open_stream replaces stock Yamux.open_stream and marks the new stream's backlog slot as stock "
        "does; py-libp2p's _finalize_stream reads the flag",
    ("p2p_fast/stack/muxer.py", "_backlog_slot_released"):
        "the other half of the backlog-slot flags stock Yamux.open_stream sets on a stream whose SYN failed",
}


def _own_names(tree: ast.AST) -> set[str]:
    """Private names the module defines: functions, classes, module globals and ``self.``/``cls.`` attributes."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            out.add(node.attr)
    return {n for n in out if n.startswith("_")}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_object(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super")


def private_accesses(source: str, rel: str) -> list[tuple[int, str, str]]:
    """(line, private name, expression) of every use of another object's private name in ``source``."""
    tree = ast.parse(source, rel)
    own = _own_names(tree)
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and _private(node.attr) and not _own_object(node.value):
            name = node.attr
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _private(node.args[1].value) and not _own_object(node.args[0])):
            name = node.args[1].value
        if name is not None and name not in own:
            found.append((node.lineno, name, ast.unparse(node)))
    return found


def _checked_files() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(EXEMPT_DIRS) or rel in EXEMPT_FILES or path.name.endswith("_pb2.py"):
            continue
        out.append((rel, path))
    return out


def test_no_module_uses_another_objects_private_names():
    offences = []
    used_allowances = set()
    for rel, path in _checked_files():
        for line, name, expr in private_accesses(path.read_text(), rel):
            if (rel, name) in ALLOWED:
                used_allowances.add((rel, name))
                continue
            offences.append(f"{rel}:{line}: {expr}")
    assert not offences, ("private names of another object (py-libp2p's belong in "
                          "p2p_fast/stack/libp2p_internals.py):\n" + "\n".join(offences))
    stale = set(ALLOWED) - used_allowances
    assert not stale, f"allow-list entries that no longer match anything, remove them: {sorted(stale)}"


def test_the_check_finds_what_it_should_and_only_that():
    source = (
        "import os\n"
        "class _Mine:\n"
        "    def __init__(self, host):\n"
        "        self._state = 1\n"
        "        self._host = host\n"
        "    def run(self):\n"
        "        super()._start()\n"                            # a base class's method: allowed
        "        self._host._observed_addr_manager\n"           # line 8: another object's private name
        "        getattr(self._host, '_push_identify', None)\n"  # line 9: the same, spelled with getattr
        "        other = _Mine(None)\n"
        "        other._state\n"                                 # the module's own private name: allowed
        "        self._host.__class__\n"                         # dunder: allowed
        "        os._exit(0)\n"                                  # line 13: flagged here (allow-listed per file)
    )
    found = private_accesses(source, "example.py")
    assert [(line, name) for line, name, _ in found] == [
        (8, "_observed_addr_manager"), (9, "_push_identify"), (13, "_exit")]


def test_the_exempt_files_exist_and_the_walk_covers_the_package():
    assert (REPO / EXEMPT_FILES[0]).is_file() and (REPO / EXEMPT_DIRS[0]).is_dir()
    checked = {rel for rel, _ in _checked_files()}
    assert "p2p_fast/protocols/nat/autonat.py" in checked and "p2p_fast/stack/connmgr.py" in checked
    assert len(checked) > 100
