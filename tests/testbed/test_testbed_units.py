"""Parts of the test bed that need no namespaces."""

from __future__ import annotations

import time

import pytest

from testing.testbed import (
    Netem,
    WaitTimeout,
    available,
    search_domains,
    unavailable_reason,
    wait_until,
)


def test_wait_until_returns_the_truthy_value():
    calls = iter([None, 0, "yes"])
    assert wait_until(lambda: next(calls), 2, what="third call") == "yes"


def test_wait_until_names_what_it_waited_for_and_the_last_error():
    def failing():
        raise ConnectionRefusedError("nobody home")

    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"waiting for the relay to listen; last error: ConnectionRefusedError"):
        wait_until(failing, 0.3, what="the relay to listen", ignore=(ConnectionRefusedError,))
    assert 0.3 <= time.monotonic() - t0 < 1.0
    with pytest.raises(WaitTimeout, match="the moon"):
        wait_until(lambda: False, 0.05, what="the moon")


def test_wait_until_does_not_swallow_unexpected_errors():
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, 1)


def test_available_agrees_with_the_reason():
    reason = unavailable_reason()
    assert available() == (reason is None)
    assert reason is None or isinstance(reason, str) and reason


def test_search_domains_are_those_of_a_pod():
    assert search_domains("net-test.svc.cluster.local") == [
        "net-test.svc.cluster.local", "svc.cluster.local", "cluster.local"]


def test_netem_rejects_impossible_settings():
    Netem(delay_ms=50, jitter_ms=10, loss_pct=1.5)
    for bad in (dict(delay_ms=-1), dict(delay_ms=5, jitter_ms=10), dict(loss_pct=101), dict(rate_kbit=0)):
        with pytest.raises(ValueError):
            Netem(**bad)
