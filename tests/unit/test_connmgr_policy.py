"""The connection manager's pruning policy (p2p_fast.stack.connmgr.choose_prunes) without a network, and its limits."""

from __future__ import annotations

import pytest

from p2p_fast.stack.connmgr import ConnManager, Limits, PeerState, choose_prunes

NOW = 1000.0


def peers(n: int, age: float = 100.0, streams: int = 0) -> dict[str, PeerState]:
    return {f"p{i}": PeerState(connected_at=NOW - age, streams=streams, protected_by=None) for i in range(n)}


def test_nothing_is_pruned_at_or_below_high():
    limits = Limits(low=4, high=8, grace=10)
    assert choose_prunes(peers(8), limits, NOW) == []
    assert choose_prunes(peers(0), limits, NOW) == []


def test_above_high_prunes_down_to_low():
    limits = Limits(low=4, high=8, grace=10)
    chosen = choose_prunes(peers(9), limits, NOW)
    assert len(chosen) == 5
    assert len(set(chosen)) == 5


def test_protected_peers_and_young_connections_are_kept():
    limits = Limits(low=2, high=4, grace=30)
    state = peers(10)
    state["p0"] = PeerState(NOW - 100, 0, "relay")
    state["p1"] = PeerState(NOW - 100, 0, "bootstrap")
    state["p2"] = PeerState(NOW - 100, 0, "tasks")
    state["p3"] = PeerState(NOW - 5, 0, None)  # within the grace period
    chosen = choose_prunes(state, limits, NOW)
    assert not {"p0", "p1", "p2", "p3"} & set(chosen)
    assert set(chosen) == {f"p{i}" for i in range(4, 10)}  # only 6 may go: 4 remain although low is 2


def test_a_burst_of_new_connections_does_not_push_settled_peers_out():
    # DHT announcements and AutoNAT dial-backs open connections that their dialer closes seconds later: counted at
    # once, 10 of them pushed a node with 8 settled peers (its mesh) above high, and the trim closed the settled
    # ones, the only ones past their grace period (a 100-node run: w042 went 25 -> 33 -> 42 peers in 5 s and
    # closed mesh peers three times).
    limits = Limits(low=4, high=8, grace=30)
    state = peers(8)
    state.update({f"new{i}": PeerState(NOW - 2, 0, None) for i in range(10)})
    assert choose_prunes(state, limits, NOW) == []
    # the same connections still open after their grace period are settled ones, and pruned as such
    later = {p: PeerState(NOW - 40, 0, None) for p in state}
    assert len(choose_prunes(later, limits, NOW)) == 18 - 4


def test_mesh_peers_go_last():
    limits = Limits(low=1, high=2, grace=0)
    state = {
        "two-meshes": PeerState(NOW - 50, 0, None, value=2),
        "no-mesh-busy": PeerState(NOW - 500, 5, None, value=0),
        "one-mesh": PeerState(NOW - 50, 0, None, value=1),
    }
    assert choose_prunes(state, limits, NOW) == ["no-mesh-busy", "one-mesh"]


def test_idlest_then_newest_go_first():
    limits = Limits(low=2, high=3, grace=0)
    state = {
        "busy-old": PeerState(NOW - 500, 3, None),
        "idle-old": PeerState(NOW - 500, 0, None),
        "idle-new": PeerState(NOW - 50, 0, None),
        "busy-new": PeerState(NOW - 50, 3, None),
    }
    assert choose_prunes(state, limits, NOW) == ["idle-new", "idle-old"]


def test_limits_are_capped_by_max_connections_and_checked():
    assert Limits.from_config(16, 24, 30, max_connections=2) == Limits(2, 2, 30)
    assert Limits.from_config(16, 24, 30, max_connections=20) == Limits(16, 20, 30)
    with pytest.raises(ValueError, match="low <= high"):
        Limits(low=5, high=4, grace=1)
    with pytest.raises(ValueError, match="grace"):
        Limits(low=1, high=4, grace=-1)


class FakeHost:
    """Just enough of a host for ``wants_more``/``protected_by`` (no network: the policy questions only)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_connected_peers(self) -> list[int]:
        return list(range(self.n))


def test_a_failing_protector_protects_and_dialing_stops_at_low():
    mgr = ConnManager(FakeHost(3), Limits(3, 6, 1))
    assert not mgr.wants_more()
    mgr.host = FakeHost(2)
    assert mgr.wants_more()

    def broken(peer: object) -> bool:
        raise RuntimeError("boom")

    mgr.protect("mesh", lambda p: p == "m")
    mgr.protect("tasks", broken)
    assert mgr.protected_by("m") == "mesh"
    assert mgr.protected_by("x") == "tasks"  # a protector that fails keeps the peer rather than risk it
