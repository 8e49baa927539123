"""pytest fixtures for the network test bed.

Enable with `pytest_plugins = ["testing.testbed.pytest_plugin"]` in the root conftest.py (or `-p
testing.testbed.pytest_plugin`). Then:

    @pytest.mark.netns
    def test_relay(testbed):
        relay = testbed.add_host("relay")
        ...

`testbed` skips the test, naming what is missing, when the machine cannot host a bed (not root, no `ip netns`),
and tears the bed down after the test, whatever happened. When a test fails, the tails of its processes' logs are
added to the report ("testbed logs" section).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testing.testbed._system import dns_unavailable_reason, unavailable_reason
from testing.testbed.topology import Testbed, cleanup_stale

_stale_cleaned = False


def require_testbed(dns: bool = False) -> None:
    """Skip the calling test (or fixture) unless a test bed can run here (with DNS, if `dns`)."""
    reason = dns_unavailable_reason() if dns else unavailable_reason()
    if reason:
        pytest.skip(f"network test bed unavailable: {reason}")


def _cleanup_stale_once() -> None:
    global _stale_cleaned
    if not _stale_cleaned:
        _stale_cleaned = True
        cleanup_stale()


@pytest.fixture
def testbed(request: pytest.FixtureRequest) -> Iterator[Testbed]:
    """A started `Testbed` (empty: no hosts yet), closed after the test."""
    require_testbed()
    _cleanup_stale_once()
    with Testbed(label=request.node.nodeid) as bed:
        request.node._p2pf_testbed = bed
        try:
            yield bed
        finally:
            request.node._p2pf_testbed = None


@pytest.fixture
def testbed_dns_ok() -> None:
    """Depend on this to skip when DNS (dnsmasq, dnspython) is missing."""
    require_testbed(dns=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    bed = getattr(item, "_p2pf_testbed", None)
    if bed is not None and report.when == "call" and report.failed and not any(
            title == "testbed logs" for title, _ in report.sections):
        tails = bed.log_tails(30)
        if tails:
            report.sections.append(("testbed logs", tails))
