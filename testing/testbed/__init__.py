"""A test bed of real network namespaces: public hosts on a switch, NAT routers with private hosts behind them,
Kubernetes-style DNS, link faults and impairments -- several machines' worth of network on one Linux box.

Needs root, `ip netns` (iproute2), iptables, and for DNS dnsmasq (dnsmasq-base) and dnspython. `unavailable_reason()`
says what is missing; tests use the `testbed` fixture of `testing.testbed.pytest_plugin`, which skips with that
reason. Everything it creates stays inside namespaces it made, and `Testbed.close()` removes it all.
"""

from testing.testbed._system import (
    CommandError,
    TestbedError,
    TestbedUnavailable,
    available,
    call_in_netns,
    dns_unavailable_reason,
    netem_supported,
    unavailable_reason,
)
from testing.testbed.dns import DEFAULT_DOMAIN, Dns, search_domains
from testing.testbed.process import ManagedProcess, WaitTimeout, wait_until
from testing.testbed.shaping import Netem
from testing.testbed.topology import Host, NatRouter, Node, Testbed, cleanup_stale

__all__ = [
    "DEFAULT_DOMAIN",
    "CommandError",
    "Dns",
    "Host",
    "ManagedProcess",
    "NatRouter",
    "Netem",
    "Node",
    "Testbed",
    "TestbedError",
    "TestbedUnavailable",
    "WaitTimeout",
    "available",
    "call_in_netns",
    "cleanup_stale",
    "dns_unavailable_reason",
    "netem_supported",
    "search_domains",
    "unavailable_reason",
    "wait_until",
]
