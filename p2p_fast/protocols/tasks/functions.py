"""Python functions as tasks: the ``function`` task type's payload format, and what a pool child does with it.

A ``function`` task carries a callable with its arguments, serialized with cloudpickle, behind a small JSON header
the worker reads *without* unpickling anything (unpickling is running code: only the pool child ever does it)::

    b"P2PFN1" + uint32 (big-endian) header length + header JSON + pickle((cloudpickle(fn), args, kwargs))

The header lists the packages the function needs (``[{"sha256": ..., "name": ...}]``, see ``tasks.packages``) and
names the function (``"fn"``: the first 16 hex digits of the sha256 of its pickled bytes; optional, so that a worker
learns each function's run time apart, to batch only the short ones); the worker installs the packages, and hands the child the same format with ``"paths"`` (their install directories) added. The
child puts those on ``sys.path``, unpickles, calls, and answers ``cloudpickle(value)``. An exception raised by the
function comes back as :class:`FunctionRaised` with the whole traceback text; it is not retried elsewhere (like Ray
and Dask, a function's own error is the answer, not a worker fault).

Trust: running a function is running the submitter's code with the worker's rights, and unpickling a result is
running the worker's code with the client's rights. Workers opt in (``tasks.accept_functions``) and take functions
only from submitters they trust (``tasks.allowed_submitters``, or every member of a network with a PSK).

This module is imported by pool children and by the client: standard library only at import time.
"""

from __future__ import annotations

import json
import struct
import sys
import traceback
from typing import Any, Callable

from p2p_fast.protocols.tasks.builtins import InvalidPayload

FUNCTION_TYPE = "function"
FUNCTION_CAPABILITY = "functions"
FUNCTION_REF = "p2p_fast.protocols.tasks.functions:run"
MAGIC = b"P2PFN1"
_HLEN = struct.Struct(">I")
MAX_HEADER = 64 * 1024
_PATHS: list[str] = []  # the package directories on this child's sys.path now
_FUNCTIONS: dict[bytes, Callable[..., Any]] = {}  # a pool child's unpickled functions (a map runs one many times)
_FUNCTION_IDS: dict[bytes, str] = {}


class FunctionRaised(InvalidPayload):
    """The submitted function raised; the message is the exception and its traceback (a final answer)."""


def _user_module(name: str) -> Any:
    """The module ``name`` when it is the user's own code (not installed: not under the interpreter's prefixes), which
    workers cannot import and so must receive by value; None for installed packages and the standard library."""
    import sysconfig

    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if module is None or not path or name == "__main__" or name.split(".")[0] in ("p2p_fast", "cloudpickle"):
        return None
    installed = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if any(path.startswith(p) for p in installed if p):
        return None
    return module


def pickle_function(fn: Callable[..., Any]) -> bytes:
    """The callable alone, by value where it must be (lambdas, ``__main__``, the user's own modules that workers do
    not have installed); installed packages go by reference. A client caches this per function."""
    import cloudpickle

    module = _user_module(getattr(fn, "__module__", "") or "")
    if module is None:
        return cloudpickle.dumps(fn, protocol=5)  # type: ignore[no-any-return]
    cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(fn, protocol=5)  # type: ignore[no-any-return]
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def encode(fn_blob: bytes, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
           packages: list[dict[str, str]] | None = None) -> bytes:
    """The payload of a ``function`` task (client side); ``fn_blob`` from :func:`pickle_function`. Arguments go
    through the C pickler (fast) and through cloudpickle only when that cannot take them."""
    import pickle

    call = (fn_blob, tuple(args), dict(kwargs or {}))
    try:
        body = pickle.dumps(call, protocol=5)
    except Exception:
        import cloudpickle

        body = cloudpickle.dumps(call, protocol=5)
    return pack_header({"packages": list(packages or []), "fn": function_id(fn_blob)}, body)


def function_id(fn_blob: bytes) -> str:
    """The ``"fn"`` of the header (cached per blob: a client submits the same pickled function many times)."""
    fid = _FUNCTION_IDS.get(fn_blob)
    if fid is None:
        import hashlib

        if len(_FUNCTION_IDS) >= 64:
            _FUNCTION_IDS.clear()
        fid = _FUNCTION_IDS[fn_blob] = hashlib.sha256(fn_blob).hexdigest()[:16]
    return fid


def pack_header(header: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + _HLEN.pack(len(raw)) + raw + body


def split(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """Header and pickled body of a function payload; :class:`InvalidPayload` naming what is wrong."""
    if not payload.startswith(MAGIC) or len(payload) < len(MAGIC) + _HLEN.size:
        raise InvalidPayload("not a function payload (use p2p_fast.client to submit Python functions)")
    (n,) = _HLEN.unpack_from(payload, len(MAGIC))
    start = len(MAGIC) + _HLEN.size
    if n > MAX_HEADER or start + n > len(payload):
        raise InvalidPayload("function payload header is truncated or too long")
    try:
        header = json.loads(payload[start:start + n])
    except ValueError as exc:
        raise InvalidPayload(f"function payload header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("packages", []), list):
        raise InvalidPayload("function payload header must be an object with a list of packages")
    return header, payload[start + n:]


def decode_result(result: bytes) -> Any:
    """A function task's result as the Python object the function returned (client side: runs the worker's pickle)."""
    import pickle

    return pickle.loads(result)


def _use_packages(paths: list[str]) -> None:
    """Exactly ``paths`` on ``sys.path`` of this (reused) child: a task sees the packages it shipped and no others;
    modules imported from a package the previous task had are dropped."""
    if paths == _PATHS:
        return
    for old in [p for p in _PATHS if p not in paths]:
        while old in sys.path:
            sys.path.remove(old)
        prefix = old.rstrip("/") + "/"
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(prefix):
                del sys.modules[name]
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    _PATHS[:] = paths
    import importlib

    importlib.invalidate_caches()


def run(payload: bytes) -> bytes:
    """Pool-child entry point: load the packages, unpickle, call, pickle the value."""
    import pickle

    import cloudpickle

    header, body = split(payload)
    _use_packages([p for p in header.get("paths", []) if isinstance(p, str)])
    try:
        fn_blob, args, kwargs = pickle.loads(body)
        fn = _FUNCTIONS.get(fn_blob)
        if fn is None:
            fn = cloudpickle.loads(fn_blob)
            if len(_FUNCTIONS) >= 64:
                _FUNCTIONS.clear()
            _FUNCTIONS[fn_blob] = fn
    except Exception as exc:
        raise FunctionRaised(f"cannot load the function on this worker: {type(exc).__name__}: {exc} (is the module "
                             "it comes from installed here, or shipped with packages=?)") from None
    try:
        value = fn(*args, **kwargs)
    except Exception as exc:
        text = "".join(traceback.format_exception(exc)).rstrip()
        raise FunctionRaised(f"{type(exc).__name__}: {exc}\n{text}") from None
    try:
        try:
            return pickle.dumps(value, protocol=5)  # the C pickler: ~100x cheaper for plain data
        except Exception:
            return cloudpickle.dumps(value, protocol=5)  # type: ignore[no-any-return]  # lambdas, local classes
    except Exception as exc:
        raise FunctionRaised(f"the function's result cannot be pickled: {type(exc).__name__}: {exc}") from None
