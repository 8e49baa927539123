"""Task types: the built-ins and the user's own, registered through the ``p2p_fast.protocols.tasks`` entry-point group.

A task type has a name, the capability a worker must advertise to run it, and how it runs: ``inline`` types execute
on the worker's event loop (trivial or I/O-bound built-ins: ``echo``, ``storage``), the rest in the process pool
(``compute``, ``sleep`` and every user type). A user type is a plain function ``payload: bytes -> bytes | str``::

    # mypkg/tasks.py
    from p2p_fast.protocols.tasks import task_type

    @task_type(capability="wordcount")          # optional; the default capability is the entry-point name
    def wordcount(payload: bytes) -> str:
        return str(len(payload.split()))

    # pyproject.toml of mypkg
    [project.entry-points."p2p_fast.protocols.tasks"]
    wordcount = "mypkg.tasks:wordcount"

and a worker that should run it lists the capability in ``node.capabilities``. Submitters that do not have the
plugin installed still route ``wordcount`` tasks: an unknown type needs the capability of the same name.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

from p2p_fast.protocols.tasks.builtins import verify_compute

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "p2p_fast.protocols.tasks"
TYPE_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class TaskType:
    name: str
    capability: str
    fn_ref: str = ""  # "module:attr" run in the process pool
    inline: bool = False  # runs on the event loop (handled by the worker itself)
    # Submitter-side check of a result (payload, result): False wrong, True right, None cannot tell. Cheap: it runs on
    # the submitter's event loop for every result.
    verify: Callable[[bytes, bytes], bool | None] | None = None
    builtin: bool = False


def task_type(capability: str | None = None,
              verify: Callable[[bytes, bytes], bool | None] | None = None) -> Callable[[Callable[..., Any]],
                                                                                     Callable[..., Any]]:
    """Decorate a user task function to set its capability (default: the entry-point name) and, optionally, a cheap
    verifier ``verify(payload, result) -> bool | None`` that submitters with the plugin installed run on every result
    (False: wrong, the worker is penalised and the task runs elsewhere; None: cannot tell)."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__p2p_task__ = {"capability": capability, "verify": verify}  # type: ignore[attr-defined]
        return fn

    return mark


def _verify_echo(payload: bytes, result: bytes) -> bool:
    return payload == result


BUILTIN_TYPES = {
    "echo": TaskType("echo", "compute", "p2p_fast.protocols.tasks.builtins:echo", inline=True, verify=_verify_echo,
                     builtin=True),
    "compute": TaskType("compute", "compute", "p2p_fast.protocols.tasks.builtins:compute", verify=verify_compute,
                        builtin=True),
    "sleep": TaskType("sleep", "compute", "p2p_fast.protocols.tasks.builtins:sleep", builtin=True),
    "storage": TaskType("storage", "storage", inline=True, builtin=True),
    # A Python callable (cloudpickle), run only by workers with tasks.accept_functions (see tasks.functions).
    "function": TaskType("function", "functions", "p2p_fast.protocols.tasks.functions:run", builtin=True),
}


class TaskTypes:
    """The types this node knows: built-ins plus installed plugins."""

    def __init__(self, load_plugins: bool = True) -> None:
        self.types: dict[str, TaskType] = dict(BUILTIN_TYPES)
        if load_plugins:
            self._load_plugins()

    def _load_plugins(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            name = ep.name
            if not TYPE_NAME_RE.match(name):
                log.warning("task type %r from %s ignored: names are lowercase letters, digits, _ . -", name, ep.value)
                continue
            if name in BUILTIN_TYPES:
                log.warning("task type %r from %s ignored: it is a built-in type", name, ep.value)
                continue
            try:
                fn = ep.load()
            except Exception as exc:
                log.warning("task type %r (%s) could not be loaded: %s", name, ep.value, exc)
                continue
            if not callable(fn):
                log.warning("task type %r (%s) is not callable", name, ep.value)
                continue
            meta = getattr(fn, "__p2p_task__", {}) or {}
            capability = meta.get("capability") or name
            verify = meta.get("verify")
            self.types[name] = TaskType(name, capability, ep.value, verify=verify if callable(verify) else None)
            log.info("task type %r registered from %s (capability %s)", name, ep.value, capability)

    def get(self, name: str) -> TaskType | None:
        return self.types.get(name)

    def capability_for(self, name: str) -> str:
        """Which capability a worker needs for ``name``: known types say; an unknown type needs its own name."""
        t = self.types.get(name)
        return t.capability if t is not None else name

    def runnable(self, capabilities: list[str]) -> list[str]:
        caps = set(capabilities)
        return sorted(n for n, t in self.types.items() if t.capability in caps)
