"""Where a task goes: candidate workers, their cost, and the choice for one task. Pure: no network, no trio.

A candidate's cost has two parts. The *static* part is fixed for one assignment round: what the worker advertised
(busy share of its slots, load average), the RTT our health checks measured, and its reputation with us. The
*dynamic* part grows as this node hands the worker tasks in the same round: our tasks in flight there over its
window (heavy tasks: its slots + 1; light, inline tasks: ``Weights.light_window``, weighing like one busy slot at
``Weights.light_soft``). The cheapest worker with room wins; one that already failed this task is used only when
every capable worker has failed it. The weights are named in ``Weights`` so a change to the policy is one edit
here, and ``tests/tasks/test_scheduler.py`` checks the choices it makes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Mapping, Protocol, Sequence

from p2p_fast.protocols.tasks.window import LinkWindow


@dataclass(frozen=True)
class Weights:
    """What each signal adds to a candidate's cost (lower wins)."""

    busy: float = 0.3  # times the share of the worker's advertised slots in use
    load: float = 0.3  # times its load average per core ...
    load_cap: float = 2.0  # ... counted up to this
    rtt: float = 10.0  # per second of round-trip time ...
    rtt_cap: float = 1.0  # ... counted up to this (100 ms: a far worker is not excluded, only weighed)
    rtt_unknown: float = 0.005  # the RTT assumed until the health monitor measured one
    reputation: float = 1.0  # times (1 - reputation score): a worker with wrong results behind it costs more
    provider: float = 1.0  # a worker known only from a DHT provider record: nothing advertised, a fixed cost
    light_window: int = 512  # in-flight inline tasks (echo, storage) per worker
    light_soft: int = 64  # ... where the cost of one more starts to weigh like a busy slot


WEIGHTS = Weights()


class SlotLoad(Protocol):
    """What the scheduler reads of a link to a worker: our tasks in flight there, and its cool-down."""

    peer_id: str
    heavy: int
    light: int
    cooldown_until: float
    window: LinkWindow


class PeerOffer(Protocol):
    """What the scheduler reads of a peer's advertisement (``presence.PeerRecord`` is one)."""

    peer_id: str
    slots: int
    free_slots: int
    load: float


@dataclass(frozen=True)
class LocalOffer:
    """This node as a worker: its slots, the tasks it runs now, its load average per core."""

    slots: int
    running: int
    load: float


@dataclass
class Candidate:
    link: SlotLoad
    heavy_window: int
    static_cost: float


def local_cost(offer: LocalOffer, w: Weights = WEIGHTS) -> float:
    slots = offer.slots
    free = max(0, slots - offer.running)
    return w.busy * (1 - free / slots if slots else 0) + w.load * min(offer.load, w.load_cap)


def peer_cost(peer: PeerOffer, rtt: float, score: float, w: Weights = WEIGHTS) -> float:
    slots = peer.slots
    busy = 1 - peer.free_slots / slots if slots else 0.0
    return (w.busy * busy + w.load * min(max(peer.load, 0.0), w.load_cap) + min(rtt * w.rtt, w.rtt_cap)
            + w.reputation * (1 - score))


def provider_cost(score: float, w: Weights = WEIGHTS) -> float:
    return w.provider + w.reputation * (1 - score)


def gather(*, local: SlotLoad | None, local_offer: LocalOffer | None, peers: Iterable[PeerOffer],
           providers: Iterable[str], rtt: Mapping[str, float], score: Callable[[str], float],
           banned: Callable[[str], bool], link_for: Callable[[str], SlotLoad], now: float,
           w: Weights = WEIGHTS) -> list[Candidate]:
    """The candidates of one round: this node (``local``, when it has the capability), the advertising ``peers``
    and the DHT ``providers``, without banned workers and those cooling down (busy, or a failed stream open).
    ``link_for`` returns the link to a peer, creating it on first use."""
    out: list[Candidate] = []
    seen: set[str] = set()
    if local is not None and local_offer is not None:
        out.append(Candidate(local, local_offer.slots, local_cost(local_offer, w)))
        seen.add(local.peer_id)
    for peer in peers:
        if peer.peer_id in seen or banned(peer.peer_id):
            continue
        seen.add(peer.peer_id)
        link = link_for(peer.peer_id)
        if link.cooldown_until > now:
            continue
        out.append(Candidate(link, peer.slots, peer_cost(peer, rtt.get(peer.peer_id, w.rtt_unknown),
                                                         score(peer.peer_id), w)))
    for pid in providers:
        if pid in seen or banned(pid):
            continue
        link = link_for(pid)
        if link.cooldown_until > now:
            continue
        out.append(Candidate(link, 1, provider_cost(score(pid), w)))
    return out


def cost(c: Candidate, heavy: bool, w: Weights = WEIGHTS) -> float | None:
    """The cost of one more task on ``c`` now, or None when its window is full."""
    link = c.link
    if heavy:
        window = link.window.limit(c.heavy_window)  # pipelined per link, learned from the worker (window.py)
        if link.heavy >= window:
            return None
        return link.heavy / window + c.static_cost
    if link.light >= w.light_window:
        return None
    return link.light / w.light_soft + c.static_cost


class Verdict(enum.Enum):
    START = "start"  # run it on ``Choice.candidate``
    NO_USABLE = "no-usable"  # every candidate is one this task must avoid: it waits for another worker
    SKIP = "skip"  # it fits nowhere now, but another task might: let the ones behind it go ahead
    FULL = "full"  # every worker is full: the round is over


@dataclass(frozen=True)
class Choice:
    verdict: Verdict
    candidate: Candidate | None = None


def choose(cands: Sequence[Candidate], heavy: bool, excluded: Collection[str], avoid: Collection[str],
           w: Weights = WEIGHTS) -> Choice:
    """Where one task goes. ``excluded``: workers that already failed it (a last resort); ``avoid``: workers it
    must not use (refused it for credit, or ran a sibling replica)."""
    best: Candidate | None = None
    best_cost = 0.0
    fallback: Candidate | None = None
    fallback_cost = 0.0
    has_fresh = False
    for c in cands:
        if c.link.peer_id in avoid:
            continue
        is_excluded = c.link.peer_id in excluded
        has_fresh = has_fresh or not is_excluded
        c_cost = cost(c, heavy, w)
        if c_cost is None:
            continue
        if is_excluded:
            if fallback is None or c_cost < fallback_cost:
                fallback, fallback_cost = c, c_cost
        elif best is None or c_cost < best_cost:
            best, best_cost = c, c_cost
    if best is None and not has_fresh:
        best = fallback  # every capable worker already failed this task: try again anyway
    if best is not None:
        return Choice(Verdict.START, best)
    if avoid and all(c.link.peer_id in avoid for c in cands):
        return Choice(Verdict.NO_USABLE)
    if fallback is not None or any(cost(c, heavy, w) is not None for c in cands):
        return Choice(Verdict.SKIP)
    return Choice(Verdict.FULL)
