"""What a worker's answer means for the task: one pure decision per response, applied by the dispatcher.

The table (status -> what happens):

=================  ==========  ==========================================  ===========================
response           action      attempt outcome                             worker's reputation
=================  ==========  ==========================================  ===========================
ok, verified       COMPLETE    ok (the worker is paid)                     success (when paid)
ok, bad digest     RETRY       failed                                      failure
ok, too large      RETRY       failed                                      failure
ok, verifier: no   RETRY       wrong                                       wrong
busy: credit       AVOID       refused (not counted; the worker avoided)   -
busy               REQUEUE     none (the attempt is dropped; cool-down)    -
invalid            FAIL        invalid (the payload is at fault)           success
timed out          RETRY       timeout                                     timeout
rejected           RETRY       rejected (at once, no backoff)              -
failed, cancelled  RETRY       failed, cancelled                           failure
anything else      RETRY       failed                                      failure
=================  ==========  ==========================================  ===========================

An attempt can also end without an answer (``attempts.py``): the stream broke after the request went out (RETRY,
``disconnected``), no stream could be opened (RETRY, ``unreachable``, not counted), or the watchdog gave up (RETRY,
``timeout``, the worker noted ``timeout``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

from p2p_fast.protocols.messages import (TASK_BUSY, TASK_CANCELLED, TASK_FAILED, TASK_INVALID, TASK_OK, TASK_REJECTED,
                                         TASK_TIMED_OUT, TaskResponse)
from p2p_fast.protocols.tasks.credit import CREDIT_REFUSAL
from p2p_fast.protocols.tasks.journal import TaskRecord
from p2p_fast.protocols.tasks.ledger import result_digest

Verifier = Callable[[bytes, bytes], bool | None]


class Action(enum.Enum):
    COMPLETE = "complete"  # the result stands: the task completes with it
    AVOID = "avoid"  # the worker refused us for credit: another worker, or fail when every one refused
    REQUEUE = "requeue"  # the worker was busy: not an attempt; back to the head of the queue
    FAIL = "fail"  # the task itself is at fault: it fails for good
    RETRY = "retry"  # the attempt failed: the retry policy decides (retries.py)


@dataclass(frozen=True)
class Outcome:
    action: Action
    outcome: str = ""  # the attempt's outcome, as journaled
    reason: str = ""  # the attempt's reason
    note: str | None = None  # what the worker's reputation records (ledger.note), if anything
    backoff: bool = True  # RETRY: wait before the next attempt
    counted: bool = True  # RETRY: the attempt counts against ``max_retries`` (not when it never reached the worker)
    error: str = ""  # FAIL: the task's error
    digest: str = ""  # COMPLETE: the result's digest (what the receipt names)


def judge(rec: TaskRecord, resp: TaskResponse, worker: str, verify: Verifier | None,
          max_payload_bytes: int) -> Outcome:
    """What ``resp`` (the current attempt's answer from ``worker``) means for ``rec``."""
    status = resp.status
    if status == TASK_OK:
        return _judge_result(rec, resp, verify, max_payload_bytes)
    if status == TASK_BUSY and resp.error.startswith(CREDIT_REFUSAL):
        return Outcome(Action.AVOID, "refused", resp.error)
    if status == TASK_BUSY:
        return Outcome(Action.REQUEUE)
    if status == TASK_INVALID:  # the worker did its job: the payload is at fault
        return Outcome(Action.FAIL, "invalid", resp.error, note="success",
                       error=(f"the function raised on {worker}: " if rec.type == "function"
                              else f"invalid payload for {rec.type!r}: ") + resp.error)
    if status == TASK_TIMED_OUT:
        return Outcome(Action.RETRY, "timeout", resp.error, note="timeout")
    if status == TASK_REJECTED:
        return Outcome(Action.RETRY, "rejected", resp.error, backoff=False)
    if status in (TASK_FAILED, TASK_CANCELLED):
        return Outcome(Action.RETRY, "failed" if status == TASK_FAILED else "cancelled", resp.error, note="failure")
    return Outcome(Action.RETRY, "failed", f"unknown response status {status}", note="failure")


def _judge_result(rec: TaskRecord, resp: TaskResponse, verify: Verifier | None, max_payload_bytes: int) -> Outcome:
    digest = result_digest(resp.result)
    if digest != resp.result_digest:
        return Outcome(Action.RETRY, "failed", "result does not match its digest", note="failure")
    if len(resp.result) > max_payload_bytes:
        return Outcome(Action.RETRY, "failed", "result over tasks.max_payload_bytes", note="failure")
    if verify is not None and verify(rec.payload, resp.result) is False:
        # Not merely failed: a result that is wrong.
        return Outcome(Action.RETRY, "wrong", f"result does not verify for {rec.type!r}", note="wrong")
    return Outcome(Action.COMPLETE, "ok", digest=digest)
