"""The compiled modules must actually serve when they are built (yarl/propcache style guard)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import p2p_fast._ext as ext
from p2p_fast._ext import NO_EXTENSIONS

from ext_testkit import CONCERNS

EXT_DIR = Path(ext.__file__).resolve().parent
REPO = EXT_DIR.parent.parent


def _built(concern: str) -> list[Path]:
    return sorted(EXT_DIR.glob(f"_{concern}_c.*.so")) + sorted(EXT_DIR.glob(f"_{concern}_c.*.pyd"))


@pytest.mark.parametrize("concern", CONCERNS)
def test_compiled_module_serves_when_built(concern: str) -> None:
    if NO_EXTENSIONS:
        pytest.skip("running in no-extensions mode (P2P_FAST_NO_EXTENSIONS)")
    assert (EXT_DIR / f"_{concern}_c.pyx").is_file()
    if not _built(concern):
        if os.environ.get("P2P_FAST_REQUIRE_EXTENSIONS"):
            pytest.fail(f"_{concern}_c is not built but P2P_FAST_REQUIRE_EXTENSIONS is set")
        pytest.skip(f"_{concern}_c is not built (setup.py build_ext --inplace)")
    selector = getattr(ext, concern)
    assert selector.COMPILED, f"{_built(concern)[0].name} exists next to the .pyx but p2p_fast._ext.{concern} " \
        "fell back to the pure-Python twin: the extension failed to import"
    assert ext.COMPILED[concern]


def test_extensions_active_flag_matches() -> None:
    assert ext.EXTENSIONS_ACTIVE == all(ext.COMPILED.values())
    if NO_EXTENSIONS:
        assert not ext.EXTENSIONS_ACTIVE
        assert ext.SeenCache.__module__ == "p2p_fast._ext._seen_py"


def _probe(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("P2P_FAST_NO_EXTENSIONS", None)
    if env_value is not None:
        env["P2P_FAST_NO_EXTENSIONS"] = env_value
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    code = "import p2p_fast._ext as e; print(e.EXTENSIONS_ACTIVE, e.SeenCache.__module__, e.message_id.__module__)"
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout


def test_no_extensions_env_selects_twins() -> None:
    assert _probe("1").split() == ["False", "p2p_fast._ext._seen_py", "p2p_fast._ext._msgid_py"]


@pytest.mark.parametrize("value", [None, "", "0"])
def test_unset_empty_or_zero_env_selects_compiled(value: str | None) -> None:
    if not all(_built(c) for c in CONCERNS):
        pytest.skip("extensions are not built")
    assert _probe(value).split() == ["True", "p2p_fast._ext._seen_c", "p2p_fast._ext._msgid_c"]
