"""A process-pool child: runs task functions for its parent node, one at a time, until stdin closes.

Protocol on stdin/stdout: 4-byte big-endian length + pickle. A request is a batch, a list of ``(fn_ref, payload)``
where ``fn_ref`` is ``"module:attribute"``; the calls run in order and each is answered as soon as it ends (one
write each, so the parent always knows which call is running), with ``("ok", bytes)``, ``("invalid", message)`` or
``("error", message)``. The child
imports only what the task needs (no libp2p), asks the kernel to kill it when its parent dies, and exits on EOF.
"""

from __future__ import annotations

import importlib
import pickle
import signal
import struct
import sys
import traceback
from typing import Any, Callable

_LEN = struct.Struct(">I")


def _die_with_parent() -> None:
    """Exit when the parent process is gone, even in the middle of a task.

    Not ``prctl(PR_SET_PDEATHSIG)``: that signal follows the *thread* that spawned us, and trio spawns processes
    from a cached worker thread that exits after 10 idle seconds, which SIGKILLed every child it had started. A
    daemon thread that notices the re-parenting instead; EOF on stdin stops us between tasks as well."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _read_exact(stream: Any, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def resolve(fn_ref: str, cache: dict[str, Callable[[bytes], Any]]) -> Callable[[bytes], Any]:
    fn = cache.get(fn_ref)
    if fn is None:
        module, _, attr = fn_ref.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        fn = cache[fn_ref] = obj
    return fn


def run_one(fn: Callable[[bytes], Any], payload: bytes) -> tuple[str, Any]:
    from p2p_fast.protocols.tasks.builtins import InvalidPayload

    try:
        result = fn(payload)
    except InvalidPayload as exc:
        return ("invalid", str(exc) or type(exc).__name__)
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
        return ("error", f"{type(exc).__name__}: {exc}{where}")
    if isinstance(result, str):
        result = result.encode("utf-8")
    elif result is None:
        result = b""
    elif not isinstance(result, (bytes, bytearray, memoryview)):
        return ("error", f"task function returned {type(result).__name__}, expected bytes or str")
    return ("ok", bytes(result))


def main() -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node handles Ctrl-C and stops us itself
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a task that prints must not corrupt the reply stream
    cache: dict[str, Callable[[bytes], Any]] = {}
    while True:
        head = _read_exact(stdin, 4)
        if head is None:
            return
        body = _read_exact(stdin, _LEN.unpack(head)[0])
        if body is None:
            return
        for fn_ref, payload in pickle.loads(body):
            try:
                reply = run_one(resolve(fn_ref, cache), payload)
            except Exception as exc:  # import failures and the like
                reply = ("error", f"cannot load {fn_ref}: {type(exc).__name__}: {exc}")
            out = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            stdout.write(_LEN.pack(len(out)) + out)
            stdout.flush()


if __name__ == "__main__":
    main()
