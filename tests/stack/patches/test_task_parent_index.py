"""p2p_fast.stack.patches.task_parent_index: a service task's parent is found by index, with the stock answer and
without walking the task tree (stock and patched compared in one run)."""

from __future__ import annotations

import trio

from p2p_fast.stack.patches import task_parent_index


def test_finding_a_tasks_parent_no_longer_walks_every_task():
    """``TrioManager._find_parent_task`` gives the stock answer without walking the service's task tree."""
    from libp2p.tools.anyio_service import Service, background_trio_service
    from libp2p.tools.anyio_service.trio_tasks import FunctionTask

    answers: list[tuple[object, object]] = []
    walked: list[int] = []
    stock_iterate = FunctionTask.iterate_tasks.__func__  # type: ignore[attr-defined]

    def compare(manager) -> None:
        me = trio.lowlevel.current_task()
        answers.append((task_parent_index.STOCK_FIND_PARENT_TASK(manager, me), manager._find_parent_task(me)))

    class Svc(Service):
        async def run(self) -> None:
            release = trio.Event()

            async def idle() -> None:
                await release.wait()

            async def child() -> None:
                compare(self.manager)
                self.manager.run_task(grandchild)
                await release.wait()

            async def grandchild() -> None:
                compare(self.manager)
                await release.wait()

            for _ in range(900):  # a busy service: many tasks in flight (py-libp2p caps a parent at 1000)
                self.manager.run_task(idle)
            for _ in range(5):
                self.manager.run_task(child)
            await trio.sleep(0.2)
            compare(self.manager)  # the service's own run task

            async def foreign() -> None:  # a task that is not the service's (like a stream handler's)
                compare(self.manager)
                # count the tasks each lookup visits from here
                visited = 0

                def counting(cls, *tasks):
                    nonlocal visited
                    for t in stock_iterate(cls, *tasks):
                        visited += 1
                        yield t

                FunctionTask.iterate_tasks = classmethod(counting)
                try:
                    me = trio.lowlevel.current_task()
                    self.manager._find_parent_task(me)
                    walked.append(visited)
                    task_parent_index.STOCK_FIND_PARENT_TASK(self.manager, me)
                    walked.append(visited)
                finally:
                    FunctionTask.iterate_tasks = classmethod(stock_iterate)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(foreign)
            release.set()
            self.manager.cancel()

    async def main() -> None:
        async with background_trio_service(Svc()) as manager:
            await manager.wait_finished()

    task_parent_index.apply()
    assert task_parent_index.PATCH.is_applied()
    trio.run(main)
    assert len(answers) == 12
    assert all(stock is ours for stock, ours in answers)
    # children, grandchildren and the service's run task are in the tree; the foreign task is not
    assert sum(1 for stock, _ in answers if stock is not None) == 11
    # The bug: one lookup from outside the tree visits every task; the indexed one visits none.
    assert walked[0] == 0 and walked[1] > 900
