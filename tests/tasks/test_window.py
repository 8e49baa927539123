"""The pipelined window per submitter -> worker link (``tasks/window.py``): what the worker grants, what the
submitter keeps in flight, and the ``window`` field of ``TaskResponse`` on the wire. Behaviour only: no clocks."""

from __future__ import annotations

from p2p_fast.protocols.codec import decode, encode
from p2p_fast.protocols.messages import TASK_OK, TaskResponse
from p2p_fast.protocols.tasks.links import Link
from p2p_fast.protocols.tasks.scheduler import Candidate, cost
from p2p_fast.protocols.tasks.window import MAX_WINDOW, QUEUE_TIME_S, LinkWindow


def test_before_the_worker_says_anything_one_task_waits_per_worker() -> None:
    w = LinkWindow()
    assert w.limit(2) == 3
    assert w.limit(0) == 0  # no slots: nothing heavy goes there
    w.observe(0.001, None, ok=True)  # an older worker that does not say its window
    assert w.limit(2) == 3


def test_short_tasks_fill_the_window_the_worker_grants_and_no_more() -> None:
    w = LinkWindow()
    w.observe(0.0001, 66, ok=True)
    assert w.limit(2) == 66  # many short tasks queued there, up to what the worker holds without "busy"
    w.observe(0.0001, 10, ok=True)
    assert w.limit(2) == 10  # the worker lowered it (tasks.queue_limit 8): follow
    w.observe(0.0001, 10**9, ok=True)
    assert w.limit(2) == 2 + int(2 * QUEUE_TIME_S / w.elapsed)  # QUEUE_TIME_S of its work beyond the slots
    assert w.limit(16) == MAX_WINDOW  # a worker cannot make us queue without bound


def test_long_tasks_keep_one_waiting_so_the_rest_stay_free_for_any_worker() -> None:
    w = LinkWindow()
    for _ in range(50):
        w.observe(0.05, 66, ok=True)  # 50 ms tasks: QUEUE_TIME_S of them is less than one per slot
    assert QUEUE_TIME_S < 0.05
    assert w.limit(2) == 3
    assert w.limit(8) == 8 + int(8 * QUEUE_TIME_S / w.elapsed) > 9  # more slots: more of it queued


def test_failures_do_not_teach_task_length_and_busy_holds_the_window() -> None:
    w = LinkWindow()
    w.observe(5.0, 66, ok=False)  # a timeout says nothing about how long tasks take
    assert w.elapsed is None and w.limit(2) == 3
    w.observe(0.0001, 66, ok=True)
    assert w.limit(2) == 66
    w.busy(inflight=7)  # other submitters fill the worker's queue: hold at what it has now
    assert w.limit(2) == 7
    w.observe(0.0001, 66, ok=True)  # its next answer grants the window again
    assert w.limit(2) == 66


def test_scheduler_cost_uses_the_links_window() -> None:
    link = Link("worker")
    c = Candidate(link, heavy_window=2, static_cost=0.0)
    link.heavy = 3
    assert cost(c, heavy=True) is None  # slots + 1 in flight: full, as before any response
    link.window.observe(0.0001, 66, ok=True)
    assert cost(c, heavy=True) is not None  # a short-task worker that grants 66 takes more
    link.heavy = 66
    assert cost(c, heavy=True) is None


def test_task_response_window_on_the_wire() -> None:
    resp = TaskResponse("t" * 32, 1, "w", TASK_OK, "", b"r", "d", 0.5, 66)
    assert decode(encode(resp)) == resp
    old = TaskResponse("t" * 32, 1, "w", TASK_OK, "", b"r", "d", 0.5)
    assert old.window is None and decode(encode(old)).window is None


def test_worker_tells_its_window_in_every_response() -> None:
    from p2p_fast.protocols.messages import TaskRequest
    from p2p_fast.protocols.tasks.worker import Worker

    worker = Worker.__new__(Worker)
    worker.own_id, worker.executed, worker.window = "w", {}, 2 + 64
    req = TaskRequest("t" * 32, "echo", b"x", "s", 1, 1, 5.0, 0, 0.0)
    assert worker._response(req, TASK_OK, result=b"x").window == 66
