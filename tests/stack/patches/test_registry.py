"""p2p_fast.stack.patches: apply_all/revert_all round-trip to the exact stock objects, every registered patch has a
module with an upstream reference and a test, and the version guard refuses a py-libp2p it was not written for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_fast.stack import patches
from p2p_fast.stack.patches import lean_imports

HERE = Path(__file__).resolve().parent
ATTRIBUTE_PATCHES = [n for n in patches.PROCESS_WIDE if n != "lean_imports"]


def _snapshot() -> dict[str, list[tuple[object, str, object]]]:
    """(owner, name, object held now) of every attribute a process-wide patch replaces."""
    out = {}
    for name in ATTRIBUTE_PATCHES:
        patch = patches.patch_module(name).PATCH
        out[name] = [(r.owner, r.name, vars(r.owner).get(r.name)) for r in patch.replacements]
    return out


def test_apply_all_then_revert_all_restores_every_stock_object():
    patches.apply_all()
    try:
        patches.revert_all()
        for name in ATTRIBUTE_PATCHES:
            patch = patches.patch_module(name).PATCH
            assert patch.is_stock(), f"{name}: {patch.targets()} not stock after revert_all"
        stock = _snapshot()
        patches.revert_all()  # idempotent
        assert _snapshot() == stock
        patches.apply_all()
        for name in ATTRIBUTE_PATCHES:
            patch = patches.patch_module(name).PATCH
            assert patch.is_applied(), f"{name}: {patch.targets()} not applied after apply_all"
            for owner, attr, stock_obj in stock[name]:
                assert vars(owner).get(attr) is not stock_obj, f"{name}: {attr} unchanged by apply"
        patches.apply_all()  # idempotent
        assert all(patches.patch_module(n).PATCH.is_applied() for n in ATTRIBUTE_PATCHES)
        patches.revert_all()
        after = _snapshot()
        for name in ATTRIBUTE_PATCHES:
            for (owner, attr, obj), (_, _, stock_obj) in zip(after[name], stock[name]):
                assert obj is stock_obj, f"{name}: {owner}.{attr} is not the stock object after the round trip"
    finally:
        patches.apply_all()  # the rest of the session runs as a node does


def test_every_patch_names_its_upstream_and_has_a_test():
    for name in (*patches.PROCESS_WIDE, *patches.PER_INSTANCE):
        module = patches.patch_module(name)
        doc = module.__doc__ or ""
        assert "Upstream" in doc and "py-libp2p 0.8.1" in doc, f"{name}: the docstring must name the upstream bug"
        assert (HERE / f"test_{name}.py").exists(), f"{name}: no tests/stack/patches/test_{name}.py"
        if name in patches.PROCESS_WIDE:
            assert callable(module.apply) and callable(module.revert)


def test_lean_imports_checks_the_versions_the_registry_supports():
    assert lean_imports.CHECKED_VERSIONS == patches.SUPPORTED_VERSIONS


def test_the_installed_version_is_supported():
    assert patches.check_version() == patches.installed_version() == "0.8.1"


def test_an_unknown_version_is_refused_with_a_clear_message(monkeypatch):
    monkeypatch.delenv(patches.ALLOW_ENV, raising=False)
    with pytest.raises(patches.UnsupportedLibp2pVersion) as refused:
        patches.check_version("9.9.9")
    text = str(refused.value)
    assert "py-libp2p 9.9.9 is installed" in text
    assert "0.8.1" in text and f"{patches.ALLOW_ENV}=9.9.9" in text


def test_the_override_allows_another_version_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv(patches.ALLOW_ENV, "9.9.9")
    with caplog.at_level("WARNING", logger="p2p_fast.stack.patches"):
        assert patches.check_version("9.9.9") == "9.9.9"
    assert any("not one the p2p-fast patches were written for" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv(patches.ALLOW_ENV, "9.9.8")  # an override for another version does not count
    with pytest.raises(patches.UnsupportedLibp2pVersion):
        patches.check_version("9.9.9")


def test_building_a_host_on_an_unknown_version_fails_loudly_and_patches_nothing():
    """In a fresh interpreter that reports py-libp2p 9.9.9: build_host raises, and no py-libp2p attribute changed."""
    code = (
        "import importlib.metadata as md\n"
        "stock = md.version\n"
        "md.version = lambda name: '9.9.9' if name == 'libp2p' else stock(name)\n"
        "import libp2p.network.swarm as swarm\n"
        "from p2p_fast.core.config import load_config_text\n"
        "from p2p_fast.stack.host import build_host\n"
        "from libp2p.crypto.ed25519 import create_new_key_pair\n"
        "try:\n"
        "    build_host(load_config_text('node: {listen_port: 0}\\n'), create_new_key_pair())\n"
        "except RuntimeError as exc:\n"
        "    print('REFUSED', exc)\n"
        "print('DELAY', swarm._HAPPY_EYEBALLS_DELAY)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != patches.ALLOW_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "REFUSED py-libp2p 9.9.9 is installed" in out.stdout, out.stdout
    assert "DELAY 0.25" in out.stdout  # the stock timer: nothing was applied
