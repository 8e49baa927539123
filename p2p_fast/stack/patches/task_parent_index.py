"""Finding a new service task's parent is a dictionary hit, not a walk of the service's whole task tree.

Upstream: ``libp2p/tools/anyio_service/trio_manager.py``, ``TrioManager._find_parent_task`` (py-libp2p 0.8.1).
Every background task a py-libp2p service starts (``TrioManager.run_task``; Pubsub starts one per message
received) first looks for its parent by walking the service's whole task tree with a recursive generator, and a
stream handler's task is not in that tree, so every message walks all of it: O(tasks) per message (4-6.5 % of a
subscriber's CPU, bench/RESULTS.md). No upstream issue was found.

The patch indexes ``FunctionTask`` objects by their trio task when they start (the ``FunctionTask.trio_task``
setter) and answers the lookup from that index plus a check that the task is still attached to this manager's
tree (the walk's condition): the same answer, in O(depth).
Shown by ``tests/stack/patches/test_task_parent_index.py``.
"""

from __future__ import annotations

import weakref
from typing import Any

from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

from p2p_fast.stack.patches._attrs import AttributePatch, Replacement

STOCK_TRIO_TASK_PROPERTY: property = vars(FunctionTask)["trio_task"]
STOCK_FIND_PARENT_TASK = vars(TrioManager)["_find_parent_task"]

# trio task -> the FunctionTask running in it; both sides weak, so finished tasks drop out.
_FUNCTION_TASK_OF: "weakref.WeakKeyDictionary[Any, weakref.ref[FunctionTask]]" = weakref.WeakKeyDictionary()


def _set_trio_task(self: FunctionTask, value: Any) -> None:
    STOCK_TRIO_TASK_PROPERTY.fset(self, value)  # type: ignore[misc]
    _FUNCTION_TASK_OF[value] = weakref.ref(self)


INDEXED_TRIO_TASK_PROPERTY = property(STOCK_TRIO_TASK_PROPERTY.fget, _set_trio_task)


def find_parent_task_indexed(self: TrioManager, trio_task: Any) -> Any:
    """``TrioManager._find_parent_task`` by index: the FunctionTask of ``trio_task`` if it is in this manager's
    task tree (every ancestor still lists it among its children and the top one is a root task), else None."""
    ref = _FUNCTION_TASK_OF.get(trio_task)
    task = ref() if ref is not None else None
    if task is None:
        return None
    node: Any = task
    while node.parent is not None:
        if node not in node.parent.children:
            return None
        node = node.parent
    return task if node in self._root_tasks else None


PATCH = AttributePatch(
    Replacement(FunctionTask, "trio_task", INDEXED_TRIO_TASK_PROPERTY),
    Replacement(TrioManager, "_find_parent_task", find_parent_task_indexed),
)

apply = PATCH.apply
revert = PATCH.revert
