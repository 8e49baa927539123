"""``api.fast_submit``: what its hand-made check accepts, the strict ``TaskBatch`` model of ``api.tasks`` (the full
app's) accepts too, and into the same task specs. Anything the check does not accept goes to the full app, whose
answer is the one the user gets; so this one-way property is what keeps the two paths' answers identical."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from p2p_fast.app.api.fast_submit import MAX_BATCH, build_spec, plain_batch
from p2p_fast.app.api.tasks import TaskBatch
from p2p_fast.protocols.tasks.spec import TaskSpecError

# Values near every bound and of every JSON type.
EDGES = [0.0, -1.0, 0.5, 86400.0, 86400.5, float("nan"), float("inf"), 1e300, 10**12, 10**12 + 1, 100, 101, 2**63]
ANY_JSON = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(EDGES), st.text(max_size=3),
                     st.lists(st.integers(), max_size=2),
                     st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
# Mostly valid values (so that many batches pass the check), and every kind of wrong one.
VALID = {
    "type": st.sampled_from(["echo", "function", "x" * 64, "é"]),
    "payload": st.one_of(st.text(max_size=8), st.sampled_from(["aGk=", "aGk", ""])),
    "payload_encoding": st.sampled_from(["utf-8", "base64"]),
    "timeout_s": st.one_of(st.floats(min_value=0, max_value=86400, exclude_min=True), st.integers(1, 86400)),
    "max_retries": st.integers(0, 100),
    "reward": st.one_of(st.integers(0, 10), st.just(10**12)),
    "redundancy": st.integers(1, 5),
}
WRONG = {
    "type": st.sampled_from(["", "x" * 65, "Echo!"]),
    "payload": st.sampled_from(["%%%", "a"]),
    "payload_encoding": st.sampled_from(["UTF-8", "latin-1"]),
    "timeout_s": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 90000)),
    "max_retries": st.integers(-2, 102),
    "reward": st.integers(-2, 10**12 + 2),
    "redundancy": st.integers(-1, 10),
    "priority": ANY_JSON,  # not a field: the model forbids it
}
VALID_TASK = st.fixed_dictionaries({"type": VALID["type"]}, optional={k: v for k, v in VALID.items() if k != "type"})


def _mutated(task: dict[str, Any]) -> Any:
    """``task`` with one field wrong (or of a wrong JSON type, or missing its type, or with an unknown field)."""
    def put(kv: tuple[str, Any]) -> dict[str, Any]:
        return {**task, kv[0]: kv[1]}

    key = st.sampled_from(sorted(WRONG))
    return st.one_of(key.flatmap(lambda k: st.tuples(st.just(k), st.one_of(WRONG[k], ANY_JSON))).map(put),
                     st.just({k: v for k, v in task.items() if k != "type"}))


TASK = st.one_of(VALID_TASK, VALID_TASK.flatmap(_mutated))
BATCH = st.one_of(*[st.fixed_dictionaries({"tasks": st.lists(TASK, min_size=1, max_size=3)})] * 6,
                  st.fixed_dictionaries({"tasks": st.lists(TASK, max_size=2), "extra": ANY_JSON}),
                  st.fixed_dictionaries({"tasks": ANY_JSON}), ANY_JSON)


def _model_specs(doc: Any) -> list[Any]:
    """The full app's outcome: its specs, or the error it answers with."""
    try:
        model = TaskBatch.model_validate(doc)
    except ValidationError:
        return ["422 invalid request"]
    try:
        return [t.spec() for t in model.tasks]
    except TaskSpecError as exc:
        return [f"{exc.status} {exc}"]


def _fast_specs(fields: list[Any]) -> list[Any]:
    try:
        return [build_spec(*f) for f in fields]
    except TaskSpecError as exc:
        return [f"{exc.status} {exc}"]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BATCH)
def test_what_the_fast_check_accepts_the_model_accepts_the_same_way(doc: Any) -> None:
    fields = plain_batch(doc)
    if fields is not None:
        assert _fast_specs(fields) == _model_specs(doc), doc


def test_the_client_s_batches_take_the_fast_path() -> None:
    payload = base64.b64encode(b"\x80\x04pickled").decode()
    doc = {"tasks": [{"type": "function", "payload": payload, "payload_encoding": "base64"},
                     {"type": "echo", "payload": "hi", "timeout_s": 30, "max_retries": 2, "reward": 5},
                     {"type": "compute", "payload": "1+1", "timeout_s": 2.5, "redundancy": 3}]}
    fields = plain_batch(doc)
    assert fields is not None
    assert _fast_specs(fields) == _model_specs(doc)
    assert _fast_specs(fields)[1].timeout_s == 30.0 and isinstance(_fast_specs(fields)[1].timeout_s, float)


@pytest.mark.parametrize("doc", [
    {"tasks": []},
    {"tasks": [{"type": "echo"}] * (MAX_BATCH + 1)},
    {"tasks": [{"type": "echo"}], "extra": True},
    {"tasks": [{"type": "echo", "timeout_s": True}]},
    {"tasks": [{"type": "echo", "max_retries": 1.0}]},
    {"tasks": [{"type": "echo", "timeout_s": float("nan")}]},
    {"tasks": [{"type": "echo", "payload": None}]},
    [{"type": "echo"}],
])
def test_what_the_model_refuses_goes_to_the_full_app(doc: Any) -> None:
    assert plain_batch(doc) is None
    assert _model_specs(doc) == ["422 invalid request"]


def test_a_payload_that_is_not_base64_is_the_same_error_on_both_paths() -> None:
    doc = {"tasks": [{"type": "echo", "payload": "%%%", "payload_encoding": "base64"}]}
    fields = plain_batch(doc)
    assert fields is not None
    assert _fast_specs(fields) == _model_specs(doc) == ["422 payload is not valid base64"]


@settings(max_examples=500, deadline=None)
@given(st.lists(VALID_TASK, min_size=1, max_size=4))
def test_every_valid_batch_is_answered_by_the_fast_path(tasks: list[dict[str, Any]]) -> None:
    fields = plain_batch({"tasks": tasks})
    assert fields is not None, tasks  # else the full app (and its cost) would answer a plainly valid batch
    assert _fast_specs(fields) == _model_specs({"tasks": tasks})
