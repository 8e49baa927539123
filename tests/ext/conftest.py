"""Run every hot-path test against both implementations: the compiled ``_xxx_c`` and the pure ``_xxx_py``.

``<concern>_impl`` fixtures are parametrised ``c`` / ``py``; ``<concern>_pair`` gives both at once for the
differential (hypothesis) tests. The ``c`` cases skip only in no-extensions mode or when the module is not built;
``test_ext_loaded.py`` is what fails when a built module does not load.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ext_testkit import FakeClock, compiled_module, skip_reason, twin_module  # noqa: E402


def _impl_params(concern: str) -> list:
    c = compiled_module(concern)
    return [
        pytest.param(c, id="c", marks=pytest.mark.skipif(c is None, reason=skip_reason(concern))),
        pytest.param(twin_module(concern), id="py"),
    ]


class Pair(NamedTuple):
    c: ModuleType
    py: ModuleType


def _pair(concern: str) -> Pair:
    c = compiled_module(concern)
    if c is None:
        pytest.skip(skip_reason(concern))
    return Pair(c, twin_module(concern))


@pytest.fixture(scope="session", params=_impl_params("msgid"))
def msgid_impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


@pytest.fixture(scope="session", params=_impl_params("seen"))
def seen_impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


@pytest.fixture(scope="session", params=_impl_params("kclosest"))
def kclosest_impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


@pytest.fixture(scope="session", params=_impl_params("framing"))
def framing_impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


@pytest.fixture(scope="session")
def msgid_pair() -> Pair:
    return _pair("msgid")


@pytest.fixture(scope="session")
def seen_pair() -> Pair:
    return _pair("seen")


@pytest.fixture(scope="session")
def kclosest_pair() -> Pair:
    return _pair("kclosest")


@pytest.fixture(scope="session")
def framing_pair() -> Pair:
    return _pair("framing")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
