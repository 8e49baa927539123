"""What a submission is, and the checks it must pass before anything is journaled.

The HTTP routes (``p2p_fast.app.api.tasks``) and the Python API build ``TaskSpec`` objects; the dispatcher calls
``check_spec`` on every one of a batch before it accepts any, so a bad task in a batch refuses the whole batch.
Each error class carries the HTTP status that says what the user can do about it.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2p_fast.protocols.tasks.redundancy import Redundancy
from p2p_fast.protocols.tasks.types import TYPE_NAME_RE

MAX_TIMEOUT_S = 86400.0
MAX_RETRIES = 100
MAX_REWARD = 10**12


class TaskSpecError(ValueError):
    """A submission that cannot be accepted; ``status`` is the HTTP code that says why."""

    status = 422


class UnknownTaskType(TaskSpecError):
    status = 400


class PayloadTooLarge(TaskSpecError):
    status = 413


class StorageUnavailable(TaskSpecError):
    """The journal could not take the submission (data dir full): nothing was accepted."""

    status = 507


@dataclass
class TaskSpec:
    type: str
    payload: bytes
    timeout_s: float | None = None
    max_retries: int | None = None
    reward: int | None = None
    redundancy: int | None = None  # distinct workers that must agree on the result (redundancy.py)


def check_spec(spec: TaskSpec, max_payload_bytes: int) -> None:
    """Raise the ``TaskSpecError`` that says why ``spec`` cannot be accepted; return when it can."""
    if not isinstance(spec.type, str) or not TYPE_NAME_RE.match(spec.type):
        raise TaskSpecError(f"task type {spec.type!r} is not a type name (lowercase letters, digits, _ . -; "
                            "up to 64)")
    if len(spec.payload) > max_payload_bytes:
        raise PayloadTooLarge(f"payload of {len(spec.payload)} bytes is over tasks.max_payload_bytes "
                              f"({max_payload_bytes})")
    if spec.timeout_s is not None and not 0 < spec.timeout_s <= MAX_TIMEOUT_S:
        raise TaskSpecError("timeout_s must be within (0, 86400]")
    if spec.max_retries is not None and not 0 <= spec.max_retries <= MAX_RETRIES:
        raise TaskSpecError("max_retries must be within 0..100")
    if spec.reward is not None and not 0 <= spec.reward <= MAX_REWARD:
        raise TaskSpecError("reward must be within 0..10^12")
    problem = Redundancy.check(spec.type, spec.redundancy)
    if problem:
        raise TaskSpecError(problem)
