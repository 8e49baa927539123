"""``p2p-node doctor``'s clock check reads each peer's offset from advertisement timestamps: our clock at receipt
minus the sender's ``sent_at``, the smallest of the last few. That is skew plus delivery delay, and the delay is never
negative. So a peer whose clock is ahead shows a negative offset whatever the delay, while a positive offset from one
late advertisement (a pod starting on a busy machine) may be delay alone: it is a problem only once several
advertisements agree. (A pod-cluster test failed so, on one sample of +1.5 s between pods on one machine's clock.)"""

from __future__ import annotations

from p2p_fast.app.doctor.report import OK, PROBLEM, SKIPPED
from p2p_fast.app.doctor.running import CLOCK_MIN_SAMPLES, check_clock


def _peer(pid: str, offset: float | None, samples: int | None) -> dict[str, object]:
    doc: dict[str, object] = {"peer_id": pid, "clock_offset_s": offset}
    if samples is not None:
        doc["clock_samples"] = samples
    return doc


def test_one_late_advertisement_is_not_called_a_skewed_clock() -> None:
    check = check_clock([_peer("a", 1.497, 1), _peer("b", 0.004, 3)], 1.0)
    assert check.status == OK, check
    assert "largest offset +1.497 s (peer a)" in check.detail
    assert "delivery delay or clock" in check.detail


def test_a_late_clock_seen_in_several_advertisements_is_a_problem() -> None:
    check = check_clock([_peer("a", 1.497, CLOCK_MIN_SAMPLES), _peer("b", 0.004, 3)], 1.0)
    assert check.status == PROBLEM and "+1.497 s (peer a)" in check.detail, check


def test_a_clock_ahead_is_a_problem_from_one_advertisement() -> None:
    check = check_clock([_peer("a", -1.2, 1), _peer("b", 0.3, 1)], 1.0)
    assert check.status == PROBLEM and "-1.200 s (peer a)" in check.detail, check


def test_a_node_that_does_not_say_how_many_samples_counts_as_one() -> None:
    assert check_clock([_peer("a", 1.5, None)], 1.0).status == OK
    assert check_clock([_peer("a", -1.5, None)], 1.0).status == PROBLEM


def test_offsets_within_the_limit_and_no_offsets_at_all() -> None:
    check = check_clock([_peer("a", 0.2, 5), _peer("b", -0.4, 2)], 1.0)
    assert check.status == OK and check.detail == "largest offset -0.400 s (peer b) over 2 peer(s)"
    assert check_clock([_peer("a", None, None)], 1.0).status == SKIPPED
