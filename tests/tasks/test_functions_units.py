"""Function payloads and package installs without a network: bad input is named, wheels cannot escape their
directory, and a pool child sees exactly the packages its task shipped."""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from pathlib import Path

import pytest

from p2p_fast.protocols.tasks import functions
from p2p_fast.protocols.tasks.builtins import InvalidPayload
from p2p_fast.protocols.tasks.packages import PackageError, check_ref, unpack


def _call(fn_blob: bytes, *args: object, paths: list[str] | None = None) -> object:
    header, body = functions.split(functions.encode(fn_blob, args))
    return pickle.loads(functions.run(functions.pack_header({"paths": paths or []}, body)))


def test_a_function_round_trips_and_its_exception_carries_the_traceback() -> None:
    assert _call(functions.pickle_function(lambda a, b: a * b), 6, 7) == 42

    def fails() -> None:
        raise KeyError("nope")

    with pytest.raises(functions.FunctionRaised) as info:
        _call(functions.pickle_function(fails))
    assert "KeyError: 'nope'" in str(info.value) and "Traceback (most recent call last)" in str(info.value)
    assert isinstance(info.value, InvalidPayload)  # final: the dispatcher does not retry it elsewhere


@pytest.mark.parametrize("payload, why", [
    (b"", "not a function payload"),
    (b"hello world", "not a function payload"),
    (functions.MAGIC + b"\x00\x00\x00\x10{}", "truncated"),
    (functions.MAGIC + b"\x00\x00\x00\x03{x}", "not JSON"),
    (functions.MAGIC + b"\x00\x00\x00\x02[]", "must be an object"),
    (functions.MAGIC + b"\x00\x00\x00\x11" + b'{"packages": "x"}', "list of packages"),
])
def test_bad_function_payloads_are_named(payload: bytes, why: str) -> None:
    with pytest.raises(InvalidPayload, match=why):
        functions.split(payload)


def test_an_unloadable_function_says_so() -> None:
    body = pickle.dumps((b"not a pickle", (), {}))
    with pytest.raises(functions.FunctionRaised, match="cannot load the function"):
        functions.run(functions.pack_header({}, body))


@pytest.mark.parametrize("ref, why", [
    ("x", "must be"), ({"sha256": "ab", "name": "m.py"}, "64 lowercase hex"),
    ({"sha256": "a" * 64, "name": "../evil.py"}, "file name"), ({"sha256": "a" * 64, "name": "m.tar.gz"}, "file name"),
])
def test_package_refs_are_checked(ref: object, why: str) -> None:
    with pytest.raises(InvalidPayload, match=why):
        check_ref(ref)


def test_a_wheel_cannot_write_outside_its_directory(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../escaped.py", "x = 1")
    with pytest.raises(PackageError, match="outside its directory"):
        unpack(buf.getvalue(), "evil-1.0-py3-none-any.whl", tmp_path / "pkg")
    assert not (tmp_path / "escaped.py").exists()
    with pytest.raises(PackageError, match="not a wheel"):
        unpack(b"plain bytes", "x-1.0-py3-none-any.whl", tmp_path / "pkg2")


def test_a_child_sees_exactly_the_packages_of_its_task(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    unpack(b"VALUE = 'from a'\n", "shipmod_xyz.py", a)
    unpack(b"VALUE = 'from b'\n", "shipmod_xyz.py", b)

    def value() -> str:
        import shipmod_xyz  # type: ignore[import-not-found]

        return str(shipmod_xyz.VALUE)

    blob = functions.pickle_function(value)
    try:
        assert _call(blob, paths=[str(a)]) == "from a"
        assert _call(blob, paths=[str(b)]) == "from b"  # a's module was dropped with a's directory
        with pytest.raises(functions.FunctionRaised, match="No module named 'shipmod_xyz'"):
            _call(blob)
    finally:
        functions._use_packages([])
        sys.modules.pop("shipmod_xyz", None)
