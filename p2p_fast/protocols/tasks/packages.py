"""User packages for function tasks, shipped without rebuilding the image (like Ray's runtime_env, Dask's upload_file).

A package is one file: a module (``name.py``) or a wheel (``name-ver-py3-none-any.whl``). The client uploads it to
the node it talks to (``POST /v1/blobs``), which keeps it in its blob store under its sha256; a function task names
the packages it needs in its header (``tasks.functions``). A worker that runs the task and lacks a package fetches it
over the blob protocol (from the submitter first, then the storage workers), checks the sha256, and installs it into
``<data_dir>/packages/<sha256>/<file name>/`` — one directory per content and name, so two versions never overwrite
each other, the same text shipped under two module names is importable under both, and a package is installed once
per worker. Pool children put those directories on ``sys.path``.

A wheel is unpacked as pip would for a pure-Python wheel (no build step, no dependency resolution, no scripts):
ship what you need, or extend the image for packages with compiled parts (README: "Extending the image").
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import trio

from p2p_fast.protocols.tasks.builtins import InvalidPayload

if TYPE_CHECKING:  # storage needs libp2p; the HTTP routes and unit tests that use check_ref/NAME_RE do not
    from p2p_fast.protocols.tasks.storage import Storage

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}\.(py|whl)$")
KEY_RE = re.compile(r"^[0-9a-f]{64}$")
MARKER = ".installed"


class PackageError(Exception):
    """A package could not be fetched or installed on this worker."""


def check_ref(ref: Any) -> tuple[str, str]:
    """(sha256, file name) of one entry of a function's ``packages`` list, or :class:`InvalidPayload`."""
    if not isinstance(ref, dict) or not isinstance(ref.get("sha256"), str) or not isinstance(ref.get("name"), str):
        raise InvalidPayload('each package must be {"sha256": ..., "name": ...}')
    key, name = ref["sha256"], ref["name"]
    if not KEY_RE.match(key):
        raise InvalidPayload(f"package sha256 {key[:80]!r} is not 64 lowercase hex digits")
    if not NAME_RE.match(name):
        raise InvalidPayload(f"package name {name[:80]!r} must be a file name ending in .py or .whl")
    return key, name


def unpack(data: bytes, name: str, dest: Path) -> None:
    """Install one package file into the empty directory ``dest`` (blocking: run it in a thread)."""
    dest.mkdir(parents=True, exist_ok=True)
    if name.endswith(".py"):
        (dest / name).write_bytes(data)
        return
    import io

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{name} is not a wheel (zip): {exc}") from None
    with zf:
        for member in zf.infolist():
            path = PurePosixPath(member.filename)
            if path.is_absolute() or ".." in path.parts:
                raise PackageError(f"{name}: member {member.filename!r} would land outside its directory")
        zf.extractall(dest)


class Packages:
    """This worker's installed packages, and fetching the missing ones."""

    def __init__(self, data_dir: Path, storage: Storage) -> None:
        self.storage = storage
        self.root = Path(data_dir) / "packages"
        self._locks: dict[str, trio.Lock] = {}
        self.installed = 0

    def path_of(self, key: str, name: str) -> Path:
        """Where ``name`` with content ``key`` is installed: the name is part of it, because a module's file name is
        its import name (content alone would install the first name only)."""
        return self.root / key / name

    async def ensure(self, refs: list[Any], submitter: str) -> list[str]:
        """Install directories for ``refs`` (fetching what is missing), in order."""
        paths = []
        for ref in refs:
            key, name = check_ref(ref)
            paths.append(str(await self._ensure_one(key, name, submitter)))
        return paths

    async def _ensure_one(self, key: str, name: str, submitter: str) -> Path:
        dest = self.path_of(key, name)
        if (dest / MARKER).exists():
            return dest
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            if (dest / MARKER).exists():
                return dest
            if (dest.parent / MARKER).exists():  # installed by a release that kept one directory per hash
                shutil.rmtree(dest.parent, ignore_errors=True)
            data = self.storage.store.get(key)
            if data is None:
                data = await self.storage.fetch_from([submitter], key)
            if data is None:
                data = await self.storage.fetch_from(self.storage.peers(), key)
            if data is None or hashlib.sha256(data).hexdigest() != key:
                raise PackageError(f"package {name} ({key[:12]}…) is on neither the submitter nor a storage worker")
            tmp = dest.parent / f".tmp-{os.getpid()}-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            await trio.to_thread.run_sync(unpack, data, name, tmp)
            (tmp / MARKER).write_text(name)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
            self.installed += 1
            log.info("installed package %s (%s) into %s", name, key[:12], dest)
        return dest
