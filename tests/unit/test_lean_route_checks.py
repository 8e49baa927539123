"""``api.lean_routes`` and ``api.task_docs``: what their hand-made checks accept, the full app's strict models
(``TaskLookup``, ``GossipBody``) and its ``limit`` parameter accept too, with the same values. Anything the checks do
not accept goes to the full app, whose answer the user gets; so this one-way property keeps the two paths' answers
the same."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from p2p_fast.app.api.app import GossipBody
from p2p_fast.app.api.fast_submit import MAX_BATCH
from p2p_fast.app.api.lean_routes import GOSSIP_MAX_CHARS, plain_gossip, plain_limit
from p2p_fast.app.api.task_docs import TASK_ID_RE, plain_lookup
from p2p_fast.app.api.tasks import TaskLookup

TASK_ID = st.text("0123456789abcdef", min_size=32, max_size=32)
EDGES = [0, 0.0, -0.0, -1, 60, 60.0, 60.5, 61, float("nan"), float("inf"), 1e300, 2**63, True, False]
ANY_JSON = st.one_of(st.none(), st.booleans(), st.integers(-3, 100), st.sampled_from(EDGES), st.text(max_size=3),
                     st.lists(st.integers(), max_size=2),
                     st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
IDS = st.one_of(st.lists(TASK_ID, min_size=1, max_size=3), st.lists(st.one_of(TASK_ID, ANY_JSON), max_size=3),
                st.just(["A" * 32]), st.just(["0" * 32 + "\n"]), ANY_JSON)
LOOKUP = st.one_of(
    st.fixed_dictionaries({"ids": IDS}, optional={"wait_s": st.one_of(st.floats(0, 60), st.integers(0, 60),
                                                                       ANY_JSON),
                                                  "results": st.one_of(st.booleans(), ANY_JSON)}),
    st.fixed_dictionaries({"ids": IDS, "extra": ANY_JSON}), ANY_JSON)


def _model_lookup(doc: Any) -> Any:
    """The full app's outcome: the handler's arguments, or its refusal (422 from the model, 400 for an id)."""
    try:
        model = TaskLookup.model_validate(doc)
    except ValidationError:
        return "422"
    if not all(TASK_ID_RE.match(i) for i in model.ids):
        return "400"
    return model.ids, model.wait_s, model.results


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LOOKUP)
def test_what_the_lookup_check_accepts_the_model_accepts_the_same_way(doc: Any) -> None:
    args = plain_lookup(doc)
    if args is not None:
        assert args == _model_lookup(doc), doc
        assert type(args[1]) is float


@settings(max_examples=300, deadline=None)
@given(st.lists(TASK_ID, min_size=1, max_size=4), st.one_of(st.floats(0, 60), st.integers(0, 60)), st.booleans())
def test_every_valid_lookup_is_answered_by_the_lean_route(ids: list[str], wait: float, results: bool) -> None:
    doc = {"ids": ids, "wait_s": wait, "results": results}
    assert plain_lookup(doc) == _model_lookup(doc)
    assert plain_lookup({"ids": ids}) == (ids, 0.0, True)


@pytest.mark.parametrize("doc", [
    {"ids": []}, {"ids": ["0" * 32] * (MAX_BATCH + 1)}, {"wait_s": 1}, {"ids": ["0" * 32], "wait_s": True},
    {"ids": ["0" * 32], "results": 1}, {"ids": ["0" * 32], "wait_s": float("nan")}, {"ids": "0" * 32},
])
def test_a_lookup_the_model_refuses_goes_to_the_full_app(doc: Any) -> None:
    assert plain_lookup(doc) is None
    assert _model_lookup(doc) == "422"


def _model_gossip(doc: Any) -> str | None:
    try:
        return GossipBody.model_validate(doc).text
    except ValidationError:
        return None


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.fixed_dictionaries({"text": st.one_of(st.text(max_size=5), ANY_JSON)}),
                 st.fixed_dictionaries({"text": st.text(max_size=2), "extra": ANY_JSON}), ANY_JSON,
                 st.just({"text": "x" * GOSSIP_MAX_CHARS}), st.just({"text": "é" * (GOSSIP_MAX_CHARS + 1)})))
def test_what_the_gossip_check_accepts_the_model_accepts(doc: Any) -> None:
    text = plain_gossip(doc)
    if text is not None:
        assert text == _model_gossip(doc)


def test_a_text_no_message_can_carry_goes_to_the_full_app() -> None:
    assert plain_gossip({"text": "\ud800"}) is None  # a lone surrogate, which JSON may carry
    assert plain_gossip({"text": "héllo"}) == "héllo"


@pytest.mark.parametrize("query, limit", [
    (b"", 100), (b"limit=1", 1), (b"limit=1000", 1000), (b"limit=1001", None), (b"limit=0", None),
    (b"limit=01", None), (b"limit=5&limit=6", None), (b"limit=-1", None), (b"limit=+5", None), (b"x=1", None),
    (b"limit=5\n", None),
])
def test_the_gossip_log_limit_is_plain_only_as_the_full_app_reads_it(query: bytes, limit: int | None) -> None:
    assert plain_limit(query) == limit


class _FailingNode:
    """A node whose views and gossip fail (as one stopping might): what the lean routes do with an exception."""

    def status(self) -> Any:
        raise RuntimeError("the host is gone")

    async def publish_text(self, text: str) -> None:
        raise RuntimeError("the pubsub is gone")


def _call(route: Any, method: str, path: str, body: bytes = b"") -> tuple[list[Any], list[str]]:
    import trio

    sent: list[Any] = []
    handed_on: list[str] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    def fallback() -> Any:
        async def full_app(scope: Any, receive: Any, send: Any) -> None:
            handed_on.append(scope["path"])
        return full_app

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": headers}
    trio.run(route, scope, receive, send, fallback)
    return sent, handed_on


def test_a_failing_read_goes_to_the_full_app_and_a_failing_send_is_a_json_500() -> None:
    from p2p_fast.app.api.lean_routes import LeanRoutes

    table = LeanRoutes(_FailingNode(), None, 4096).table()
    sent, handed_on = _call(table["GET", "/v1/status"], "GET", "/v1/status")
    assert (sent, handed_on) == ([], ["/v1/status"])  # the full app answers it, with its JSON 500
    sent, handed_on = _call(table["POST", "/v1/gossip"], "POST", "/v1/gossip", b'{"text": "hi"}')
    assert handed_on == [] and sent[0]["status"] == 500
    assert sent[1]["body"] == b'{"error":"internal error","detail":"RuntimeError"}'
