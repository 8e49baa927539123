"""The dispatcher's parts on their own: submission checks, what each answer means, the link state machine, queues.

Real objects throughout; the only event loop is trio's, for the queue's wake-up; no network.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2p_fast.protocols.messages import (TASK_BUSY, TASK_CANCELLED, TASK_FAILED, TASK_INVALID, TASK_OK, TASK_REJECTED,
                                         TASK_TIMED_OUT, TaskResponse)
from p2p_fast.protocols.tasks.credit import CREDIT_REFUSAL
from p2p_fast.protocols.tasks.journal import PENDING, TaskRecord
from p2p_fast.protocols.tasks.ledger import result_digest
from p2p_fast.protocols.tasks.links import Link, LinkState
from p2p_fast.protocols.tasks.outcomes import Action, judge
from p2p_fast.protocols.tasks.queues import TaskQueues
from p2p_fast.protocols.tasks.retries import MAX_BACKOFF
from p2p_fast.protocols.tasks.spec import PayloadTooLarge, TaskSpec, TaskSpecError, check_spec


def _rec(type_: str = "compute", payload: bytes = b"x", cap: str = "compute") -> TaskRecord:
    return TaskRecord(id="t" * 32, type=type_, capability=cap, payload=payload, reward=1, timeout_s=5.0,
                      max_retries=2, created=0.0)


def _resp(status: int, result: bytes = b"", error: str = "", digest: str | None = None) -> TaskResponse:
    return TaskResponse(task_id="t" * 32, attempt=1, worker="w", status=status, error=error, result=result,
                        result_digest=result_digest(result) if digest is None else digest, elapsed_s=0.0)


# -- spec ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,error,words", [
    (TaskSpec("Bad Type", b""), TaskSpecError, "not a type name"),
    (TaskSpec("echo", b"x" * 11), PayloadTooLarge, "over tasks.max_payload_bytes (10)"),
    (TaskSpec("echo", b"", timeout_s=0), TaskSpecError, "timeout_s"),
    (TaskSpec("echo", b"", max_retries=101), TaskSpecError, "max_retries"),
    (TaskSpec("echo", b"", reward=-1), TaskSpecError, "reward"),
    (TaskSpec("storage", b"", redundancy=2), TaskSpecError, "side effects"),
])
def test_a_bad_submission_is_refused_with_its_reason_and_status(spec: TaskSpec, error: type, words: str) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        check_spec(spec, max_payload_bytes=10)
    assert info.value.status == error.status


def test_a_good_submission_passes() -> None:
    check_spec(TaskSpec("compute", b"primes 0 10", timeout_s=86400, max_retries=100, reward=10**12, redundancy=3),
               max_payload_bytes=100)
    assert PayloadTooLarge.status == 413 and TaskSpecError.status == 422


# -- outcomes -------------------------------------------------------------------------------------------------------
def test_a_verified_result_completes_and_names_its_digest() -> None:
    o = judge(_rec(), _resp(TASK_OK, b"42"), "w", lambda payload, result: True, 100)
    assert o.action is Action.COMPLETE and o.digest == result_digest(b"42") and o.note is None


@pytest.mark.parametrize("resp,verify,outcome,note", [
    (_resp(TASK_OK, b"42", digest="0" * 64), None, "failed", "failure"),
    (_resp(TASK_OK, b"x" * 101), None, "failed", "failure"),
    (_resp(TASK_OK, b"41"), lambda payload, result: False, "wrong", "wrong"),
    (_resp(TASK_TIMED_OUT, error="slow"), None, "timeout", "timeout"),
    (_resp(TASK_FAILED, error="boom"), None, "failed", "failure"),
    (_resp(TASK_CANCELLED, error="stop"), None, "cancelled", "failure"),
    (_resp(99, error="?"), None, "failed", "failure"),
])
def test_a_failed_attempt_is_retried_and_noted(resp: TaskResponse, verify: object, outcome: str, note: str) -> None:
    o = judge(_rec(), resp, "w", verify, 100)  # type: ignore[arg-type]
    assert (o.action, o.outcome, o.note, o.counted, o.backoff) == (Action.RETRY, outcome, note, True, True)


def test_a_rejection_is_retried_at_once_without_blame() -> None:
    o = judge(_rec(), _resp(TASK_REJECTED, error="lacks capability"), "w", None, 100)
    assert (o.action, o.outcome, o.note, o.backoff) == (Action.RETRY, "rejected", None, False)


def test_busy_requeues_and_busy_for_credit_avoids_the_worker() -> None:
    assert judge(_rec(), _resp(TASK_BUSY, error="busy"), "w", None, 100).action is Action.REQUEUE
    o = judge(_rec(), _resp(TASK_BUSY, error=CREDIT_REFUSAL + ": owes 5"), "w", None, 100)
    assert (o.action, o.outcome, o.reason) == (Action.AVOID, "refused", CREDIT_REFUSAL + ": owes 5")


def test_an_invalid_payload_fails_the_task_and_clears_the_worker() -> None:
    o = judge(_rec(), _resp(TASK_INVALID, error="not a number"), "w", None, 100)
    assert (o.action, o.note, o.error) == (Action.FAIL, "success", "invalid payload for 'compute': not a number")
    f = judge(_rec("function", cap="functions"), _resp(TASK_INVALID, error="ZeroDivisionError"), "peer-7", None, 100)
    assert f.error == "the function raised on peer-7: ZeroDivisionError"


# -- links ----------------------------------------------------------------------------------------------------------
class _Writer:
    closed = False


def test_link_states_open_close_and_back_off() -> None:
    link = Link("w")
    assert link.state is LinkState.CLOSED and link.idle(0.0) and not link.writable
    link.outbox.append("req-1")
    link.begin_open()
    assert link.state is LinkState.OPENING and not link.idle(0.0)
    with pytest.raises(AssertionError):
        link.begin_open()  # one stream at a time
    waiting = link.opened(_Writer())  # type: ignore[arg-type]
    assert waiting == ["req-1"] and link.outbox == [] and link.writable and link.state is LinkState.OPEN
    link.closed()
    assert link.state is LinkState.CLOSED and link.writer is None and not link.writable
    cooldowns = []
    for _ in range(6):  # failed opens in a row: 1, 2, 4, 8 s, then the cap
        link.outbox.append("req")
        link.begin_open()
        link.open_failed(now=100.0)
        cooldowns.append(link.cooldown_until - 100.0)
        assert link.outbox == [] and link.state is LinkState.CLOSED and not link.idle(100.0)
    assert cooldowns == [1.0, 2.0, 4.0, 8.0, MAX_BACKOFF, MAX_BACKOFF]
    assert link.idle(100.0 + MAX_BACKOFF)
    link.begin_open()
    link.opened(_Writer())  # type: ignore[arg-type]
    assert link.open_failures == 0  # a stream that opened resets the backoff


def test_the_local_link_is_open_without_a_stream() -> None:
    local = Link("me", local=True)
    assert local.state is LinkState.OPEN and local.local and not local.writable


# -- queues ---------------------------------------------------------------------------------------------------------
def test_queues_are_per_capability_fifo_with_retries_at_the_front() -> None:
    q = TaskQueues()
    a, b, c, other = _rec(), _rec(), _rec(), _rec(cap="storage")
    for r in (a, b, other):
        q.push(r)
    q.push(c, front=True)
    assert list(q.get("compute") or []) == [c, a, b] and list(q.get("storage") or []) == [other]
    assert q.depth() == 4 and q.wakeup.is_set()


def test_delayed_tasks_come_due_in_time_order() -> None:
    q = TaskQueues()
    late, soon = _rec(), _rec()
    q.delay(late, 60.0)
    q.delay(soon, 0.0)
    assert late.state == PENDING and q.depth() == 2
    assert q.due(soon.not_before) == [soon]
    assert q.due(late.not_before - 1) == []
    assert q.due(late.not_before) == [late] and q.depth() == 0


def test_the_assign_loop_wakes_when_a_task_is_queued() -> None:
    async def main() -> None:
        q = TaskQueues()
        with trio.move_on_after(10) as scope:  # bound: fails below instead of hanging
            async with trio.open_nursery() as nursery:
                nursery.start_soon(q.wait, 3600.0)
                await trio.testing.wait_all_tasks_blocked()
                q.push(_rec())
        assert not scope.cancelled_caught
        assert not q.wakeup.is_set()  # a fresh event for the next round

    trio.run(main)


# -- layering -------------------------------------------------------------------------------------------------------
def test_the_task_package_knows_nothing_of_the_application() -> None:
    """The HTTP routes and the node depend on the task service, never the other way round (``ports.TaskEnv``)."""
    import ast
    from pathlib import Path

    import p2p_fast.protocols.tasks as pkg

    offenders = []
    for path in sorted(Path(pkg.__file__).parent.glob("*.py")):
        for n in ast.walk(ast.parse(path.read_text())):
            names = [n.module or ""] if isinstance(n, ast.ImportFrom) else [a.name for a in n.names] \
                if isinstance(n, ast.Import) else []
            offenders += [f"{path.name}: {m}" for m in names if m.startswith("p2p_fast.app")]
        assert "node: Any" not in path.read_text(), path.name
    assert offenders == []
