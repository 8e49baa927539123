"""Link impairments (delay, jitter, loss, rate) on the egress of one interface, like `tc qdisc ... netem`.

Where the kernel has the netem qdisc, that is what is used. Some minimal kernels (this project's CI machines among
them) are built without CONFIG_NET_SCH_NETEM, so there is a fallback built from what they do have:
- loss: an iptables `statistic` match dropping that share of packets;
- delay and jitter: iptables NFQUEUE plus `nfqueue_delay.py`, a small user-space program that holds each packet
  for the delay before accepting it (`--queue-bypass`: if it is not running, packets flow undelayed);
- rate: the tbf qdisc.
The fallback rules sit in the mangle table's POSTROUTING chain, so they see both locally sent and forwarded
packets (a NAT router's WAN) and never bypass the filter table's decisions.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testing.testbed._system import netem_supported, run, tool

if TYPE_CHECKING:
    from testing.testbed.process import ManagedProcess
    from testing.testbed.topology import Node

DELAYER = Path(__file__).with_name("nfqueue_delay.py")


@dataclass(frozen=True)
class Netem:
    """Impairments of one direction of a link (the egress of an interface)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_kbit: int | None = None

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.jitter_ms > self.delay_ms:
            raise ValueError("need 0 <= jitter_ms <= delay_ms")
        if not 0 <= self.loss_pct <= 100:
            raise ValueError("loss_pct must be within 0..100")
        if self.rate_kbit is not None and self.rate_kbit <= 0:
            raise ValueError("rate_kbit must be positive")


class LinkShaper:
    """Applies and removes a `Netem` on interface `iface` of `node`'s namespace."""

    def __init__(self, node: Node, iface: str, queue_num: int = 0) -> None:
        self.node = node
        self.iface = iface
        self.queue_num = queue_num
        self.chain = f"P2PF_NETEM_{iface}"
        self.current: Netem | None = None
        self._delayer: ManagedProcess | None = None
        self._fallback_rules = False

    @property
    def uses_netem_qdisc(self) -> bool:
        return netem_supported()

    def apply(self, netem: Netem) -> None:
        self.clear()
        if netem == Netem():
            return
        if self.uses_netem_qdisc:
            args = ["netem"]
            if netem.delay_ms or netem.jitter_ms:
                args += ["delay", f"{netem.delay_ms}ms"] + ([f"{netem.jitter_ms}ms"] if netem.jitter_ms else [])
            if netem.loss_pct:
                args += ["loss", f"{netem.loss_pct}%"]
            if netem.rate_kbit:
                args += ["rate", f"{netem.rate_kbit}kbit"]
            self._tc("qdisc", "replace", "dev", self.iface, "root", *args)
        else:
            self._apply_fallback(netem)
        self.current = netem

    def _apply_fallback(self, netem: Netem) -> None:
        if netem.rate_kbit:
            self._tc("qdisc", "replace", "dev", self.iface, "root", "tbf", "rate", f"{netem.rate_kbit}kbit",
                     "burst", "32kbit", "latency", "400ms")
        if not (netem.loss_pct or netem.delay_ms):
            return
        self._iptables("-N", self.chain)
        self._fallback_rules = True
        if netem.loss_pct:
            self._iptables("-A", self.chain, "-m", "statistic", "--mode", "random",
                           "--probability", f"{netem.loss_pct / 100:.6f}", "-j", "DROP")
        if netem.delay_ms:
            self._delayer = self.node.spawn(
                [sys.executable, str(DELAYER), "--queue", str(self.queue_num), "--delay-ms", str(netem.delay_ms),
                 "--jitter-ms", str(netem.jitter_ms)], name=f"netem-{self.node.name}-{self.iface}")
            self._delayer.wait_for_output(r"^ready", timeout=10.0)
            self._iptables("-A", self.chain, "-j", "NFQUEUE", "--queue-num", str(self.queue_num), "--queue-bypass")
        self._iptables("-A", "POSTROUTING", "-o", self.iface, "-j", self.chain)

    def clear(self) -> None:
        """Remove every impairment from the interface (a no-op if there is none)."""
        if self.current is None:
            return
        if self.uses_netem_qdisc or self.current.rate_kbit:
            self._tc("qdisc", "del", "dev", self.iface, "root", check=False)
        if self._fallback_rules:
            self._iptables("-D", "POSTROUTING", "-o", self.iface, "-j", self.chain, check=False)
            self._iptables("-F", self.chain, check=False)
            self._iptables("-X", self.chain, check=False)
            self._fallback_rules = False
        if self._delayer is not None:
            self._delayer.terminate(timeout=3.0)
            self._delayer = None
        self.current = None

    def _tc(self, *args: str, check: bool = True) -> None:
        run([tool("tc"), "-n", self.node.ns, *args], check=check)

    def _iptables(self, *args: str, check: bool = True) -> None:
        self.node.run([tool("iptables"), "-w", "10", "-t", "mangle", *args], check=check)
