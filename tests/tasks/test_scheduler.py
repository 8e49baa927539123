"""The scheduler on its own: candidate costs with named weights, who is a candidate, and the choice for one task.

Pure code: real ``Link`` and ``PeerRecord`` objects, no network, no event loop.
"""

from __future__ import annotations

import sys

import pytest

from p2p_fast.protocols.presence import PeerRecord
from p2p_fast.protocols.tasks import scheduler
from p2p_fast.protocols.tasks.journal import Attempt, TaskRecord
from p2p_fast.protocols.tasks.links import Link
from p2p_fast.protocols.tasks.retries import MAX_BACKOFF, attempt_summary, excluded_workers, retry_delay
from p2p_fast.protocols.tasks.scheduler import (WEIGHTS, Candidate, LocalOffer, Verdict, Weights, choose, cost, gather,
                                                local_cost, peer_cost, provider_cost)


def _peer(pid: str, slots: int = 4, free: int = 4, load: float = 0.0) -> PeerRecord:
    return PeerRecord(peer_id=pid, capabilities=["compute"], slots=slots, free_slots=free, load=load)


class _Links:
    """``link_for`` as the dispatcher's link pool does it: one ``Link`` per peer, made on first use."""

    def __init__(self) -> None:
        self.links: dict[str, Link] = {}

    def __call__(self, pid: str) -> Link:
        return self.links.setdefault(pid, Link(pid))


def _gather(peers: list[PeerRecord], links: _Links, *, providers: tuple[str, ...] = (),
            rtt: dict[str, float] | None = None, scores: dict[str, float] | None = None, banned: tuple[str, ...] = (),
            local: Link | None = None, offer: LocalOffer | None = None, now: float = 100.0,
            w: Weights = WEIGHTS) -> list[Candidate]:
    return gather(local=local, local_offer=offer, peers=peers, providers=providers, rtt=rtt or {},
                  score=lambda p: (scores or {}).get(p, 1.0), banned=lambda p: p in banned, link_for=links,
                  now=now, w=w)


def test_static_costs_follow_the_named_weights() -> None:
    idle = _peer("a", slots=4, free=4, load=0.0)
    half = _peer("b", slots=4, free=2, load=1.0)
    assert peer_cost(idle, rtt=0.0, score=1.0) == 0.0
    assert peer_cost(half, rtt=0.0, score=1.0) == pytest.approx(WEIGHTS.busy * 0.5 + WEIGHTS.load * 1.0)
    # RTT and load count up to their caps only; a worse reputation adds its share.
    assert peer_cost(idle, rtt=5.0, score=1.0) == pytest.approx(WEIGHTS.rtt_cap)
    assert peer_cost(_peer("c", load=50.0), rtt=0.0, score=1.0) == pytest.approx(WEIGHTS.load * WEIGHTS.load_cap)
    assert peer_cost(idle, rtt=0.0, score=0.25) == pytest.approx(WEIGHTS.reputation * 0.75)
    assert peer_cost(_peer("d", load=-3.0), rtt=0.0, score=1.0) == 0.0  # a negative load is no bonus
    assert provider_cost(1.0) == WEIGHTS.provider
    assert local_cost(LocalOffer(slots=4, running=4, load=0.5)) == pytest.approx(WEIGHTS.busy + WEIGHTS.load * 0.5)
    assert local_cost(LocalOffer(slots=0, running=0, load=0.0)) == 0.0


def test_window_cost_grows_with_our_tasks_there_and_ends_at_the_window() -> None:
    link = Link("w")
    c = Candidate(link, heavy_window=2, static_cost=0.1)
    costs = []
    for _ in range(3):  # a heavy window is the worker's slots + 1
        costs.append(cost(c, heavy=True))
        link.heavy += 1
    assert costs == pytest.approx([0.1, 0.1 + 1 / 3, 0.1 + 2 / 3])
    assert cost(c, heavy=True) is None
    assert cost(Candidate(Link("z"), heavy_window=0, static_cost=0.0), heavy=True) is None  # no slots: no heavy
    link.light = WEIGHTS.light_soft
    assert cost(c, heavy=False) == pytest.approx(0.1 + 1.0)  # light_soft in flight weighs like one busy slot
    link.light = WEIGHTS.light_window
    assert cost(c, heavy=False) is None


def test_candidates_leave_out_banned_and_cooling_workers_and_come_once() -> None:
    links = _Links()
    links("cool").cool_down(200.0)
    local = Link("me", local=True)
    cands = _gather([_peer("me"), _peer("a"), _peer("banned"), _peer("cool")], links,
                    providers=("a", "far", "banned"), banned=("banned",), local=local,
                    offer=LocalOffer(slots=2, running=0, load=0.0))
    assert [c.link.peer_id for c in cands] == ["me", "a", "far"]
    assert cands[0].link is local and cands[1].link is links.links["a"]
    assert cands[2].heavy_window == 1 and cands[2].static_cost == WEIGHTS.provider  # only its provider record known
    assert "banned" not in links.links  # no link is made for a banned worker
    later = _gather([_peer("cool")], links, now=300.0)  # the cool-down is over
    assert [c.link.peer_id for c in later] == ["cool"]


def test_unknown_rtt_is_the_named_default() -> None:
    (c,) = _gather([_peer("a")], _Links())
    assert c.static_cost == pytest.approx(min(WEIGHTS.rtt_unknown * WEIGHTS.rtt, WEIGHTS.rtt_cap))


def test_the_cheapest_worker_wins_and_load_spreads_over_a_round() -> None:
    links = _Links()
    cands = _gather([_peer("busy", free=0, load=1.0), _peer("idle-1"), _peer("idle-2")], links)
    chosen = []
    for _ in range(6):
        choice = choose(cands, heavy=True, excluded=(), avoid=())
        assert choice.verdict is Verdict.START and choice.candidate is not None
        chosen.append(choice.candidate.link.peer_id)
        choice.candidate.link.heavy += 1  # what starting the attempt does
    assert chosen[:2] == ["idle-1", "idle-2"]
    assert chosen.count("idle-1") == chosen.count("idle-2") == 3
    assert "busy" not in chosen  # it costs as much as three of our tasks in flight on an idle worker


def test_weights_change_the_choice() -> None:
    near, far = _peer("near", free=1), _peer("far", free=4)
    rtt = {"near": 0.001, "far": 0.02}
    default = choose(_gather([near, far], _Links(), rtt=rtt), heavy=True, excluded=(), avoid=())
    assert default.candidate is not None and default.candidate.link.peer_id == "far"  # free slots weigh more
    rtt_heavy = Weights(rtt=100.0)
    chosen = choose(_gather([near, far], _Links(), rtt=rtt, w=rtt_heavy), heavy=True, excluded=(), avoid=(),
                    w=rtt_heavy)
    assert chosen.candidate is not None and chosen.candidate.link.peer_id == "near"


def test_a_worker_that_failed_the_task_is_the_last_resort() -> None:
    links = _Links()
    cands = _gather([_peer("failed-it"), _peer("other", free=0, load=2.0)], links)
    choice = choose(cands, heavy=True, excluded={"failed-it"}, avoid=())
    assert choice.candidate is not None and choice.candidate.link.peer_id == "other"  # dearer, but fresh
    links.links["other"].heavy = 5  # full
    assert choose(cands, heavy=True, excluded={"failed-it"}, avoid=()).verdict is Verdict.SKIP  # others may fit
    only_failed = choose(cands, heavy=True, excluded={"failed-it", "other"}, avoid=())
    assert only_failed.candidate is not None and only_failed.candidate.link.peer_id == "failed-it"


def test_avoided_workers_are_never_chosen() -> None:
    links = _Links()
    cands = _gather([_peer("refused"), _peer("ok", free=0)], links)
    choice = choose(cands, heavy=True, excluded=(), avoid={"refused"})
    assert choice.candidate is not None and choice.candidate.link.peer_id == "ok"
    assert choose(cands, heavy=True, excluded=(), avoid={"refused", "ok"}).verdict is Verdict.NO_USABLE


def test_every_window_full_ends_the_round() -> None:
    links = _Links()
    cands = _gather([_peer("a", slots=1), _peer("b", slots=1)], links)
    for link in links.links.values():
        link.heavy = 2
    assert choose(cands, heavy=True, excluded=(), avoid=()).verdict is Verdict.FULL
    light = choose(cands, heavy=False, excluded=(), avoid=())  # inline tasks have a window of their own
    assert light.verdict is Verdict.START


def test_retry_delay_doubles_up_to_the_cap_with_jitter() -> None:
    mid = lambda lo, hi: 1.0  # noqa: E731 - no jitter
    assert [retry_delay(n, 0.5, counted=True, backoff=True, uniform=mid) for n in (0, 1, 2, 3)] == [0.5, 0.5, 1.0, 2.0]
    assert retry_delay(30, 0.5, counted=True, backoff=True, uniform=mid) == MAX_BACKOFF
    for _ in range(50):
        assert 0.75 <= retry_delay(1, 1.0, counted=True, backoff=True) <= 1.25
    assert retry_delay(3, 0.5, counted=False, backoff=True) == 0.05  # unreachable: next worker almost at once
    assert retry_delay(3, 0.5, counted=True, backoff=False) == 0.0  # rejected: at once


def test_failed_attempts_name_the_workers_to_avoid_and_read_in_one_line() -> None:
    rec = TaskRecord(id="t", type="compute", capability="compute", payload=b"", reward=0, timeout_s=1.0,
                     max_retries=3, created=0.0)
    rec.attempts = [Attempt(1, "a", 0.0, 1.0, "timeout", "no answer", True),
                    Attempt(2, "b", 1.0, 2.0, "unreachable", "", False),
                    Attempt(3, "c", 2.0, 3.0, "ok", "", True)]
    assert excluded_workers(rec.attempts) == {"a"}  # an uncounted attempt (never reached) excludes nobody
    assert attempt_summary(rec, ": ") == ": #1 a: timeout (no answer); #2 b: unreachable"
    rec.attempts = rec.attempts[2:]
    assert attempt_summary(rec, ": ") == ""


def test_scheduler_and_retries_import_nothing_but_the_standard_library_and_records() -> None:
    """Pure means testable alone: no trio, no libp2p, no network code under the scheduling decisions."""
    import ast
    import inspect

    from p2p_fast.protocols.tasks import retries, window

    for module, allowed in ((scheduler, {"p2p_fast.protocols.tasks.window"}), (window, set()),
                            (retries, {"p2p_fast.protocols.tasks.journal"})):
        tree = ast.parse(inspect.getsource(module))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        ours = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names}
        assert ours <= allowed, (module.__name__, ours)
