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


class _LocalBlobs:
    """What :class:`Packages` asks of the storage service, with the blobs already in this worker's own store (the
    network fetch is covered by ``tests/tasks/test_client.py``)."""

    def __init__(self, root: Path) -> None:
        from p2p_fast.protocols.tasks.storage import BlobStore

        self.store = BlobStore(root)

    async def fetch_from(self, peers: list[str], key: str) -> bytes | None:
        return None

    def peers(self) -> list[str]:
        return []


def test_the_same_text_under_two_names_is_installed_under_both(tmp_path: Path) -> None:
    import trio

    from p2p_fast.protocols.tasks.packages import Packages

    blobs = _LocalBlobs(tmp_path / "blobs")
    key = blobs.store.put(b"def triple(x):\n    return 3 * x\n")
    packages = Packages(tmp_path, blobs)  # type: ignore[arg-type]

    async def install(name: str) -> Path:
        [path] = await packages.ensure([{"sha256": key, "name": name}], "submitter")
        return Path(path)

    first, second = trio.run(install, "one_mod.py"), trio.run(install, "other_mod.py")
    assert (first / "one_mod.py").is_file()
    assert (second / "other_mod.py").is_file(), "a second name for known content was never installed"
    assert trio.run(install, "one_mod.py") == first and packages.installed == 2  # installed once per (content, name)


def test_an_install_from_the_one_directory_per_hash_layout_is_replaced(tmp_path: Path) -> None:
    import trio

    from p2p_fast.protocols.tasks.packages import MARKER, Packages

    blobs = _LocalBlobs(tmp_path / "blobs")
    key = blobs.store.put(b"VALUE = 1\n")
    legacy = tmp_path / "packages" / key
    unpack(b"VALUE = 1\n", "old_mod.py", legacy)
    (legacy / MARKER).write_text("old_mod.py")
    packages = Packages(tmp_path, blobs)  # type: ignore[arg-type]
    [path] = trio.run(packages.ensure, [{"sha256": key, "name": "old_mod.py"}], "submitter")
    assert (Path(path) / "old_mod.py").read_bytes() == b"VALUE = 1\n"
