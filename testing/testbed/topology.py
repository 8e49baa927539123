"""Hosts, NAT routers and a switch, each a network namespace, wired together on one machine.

    with Testbed() as bed:
        relay = bed.add_host("relay")                  # on the public segment (a bridge in the switch namespace)
        nat = bed.add_nat("home")                      # a router: WAN on the public segment, LAN bridge behind
        laptop = nat.add_host("laptop")                # private host, default route via the router
        dns = bed.add_dns({"p2p-bootstrap": [relay.ip]})
        server = relay.spawn_python(SERVER_CODE, name="server")
        server.wait_for_output("listening")
        laptop.python(CLIENT_CODE, relay.ip)

Layout (ID is `p2pf-` plus 4 random hex digits, unique per bed, so parallel beds never collide):
- `ID-sw`: the switch. Bridge `br0` holding the public subnet's gateway address (`.1`); it forwards nothing, so
  traffic to addresses outside the bed goes nowhere. Ports `p0`, `p1`, ... (each a veth whose peer is a host's
  `eth0` or a router's `wan0`). Interfaces are created directly inside the namespaces: the root namespace is never
  touched, and interface names only need to be unique within one namespace.
- `ID-NAME`: a host (`eth0`, default route via the gateway, `224.0.0.0/4` routed out of `eth0` for mDNS, `lo` up),
  or a NAT router (`wan0` on the public segment; bridge `lan0` with the LAN gateway; LAN ports `l0`, `l1`, ...).
- `/etc/netns/ID-NAME/{resolv.conf,hosts}` for every namespace: the bed's DNS server with Kubernetes search domains,
  or, before/without one, a nameserver on the namespace's own loopback so no query can ever leave.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from testing.testbed._system import (
    ETC_NETNS,
    NETNS_DIR,
    REGISTRY_DIR,
    TestbedError,
    TestbedUnavailable,
    call_in_netns,
    ip,
    ip_batch,
    netns_exec_argv,
    netns_pids,
    run,
    socket_in_netns,
    sysctl,
    tool,
    unavailable_reason,
)
from testing.testbed.process import ManagedProcess, ProcessTracker, wait_until
from testing.testbed.shaping import LinkShaper, Netem

if TYPE_CHECKING:
    from testing.testbed.dns import Dns

T = TypeVar("T")

DEFAULT_SUBNET = "10.77.0.0/24"
#: NAT number k (1, 2, ...) gets LAN 10.78.k.0/24 unless told otherwise.
DEFAULT_LAN_BASE = "10.78.0.0/16"
MULTICAST_NET = "224.0.0.0/4"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]

_open_beds: weakref.WeakSet[Testbed] = weakref.WeakSet()


class Node:
    """Anything with a network namespace of its own: a host, a NAT router, the DNS server's host."""

    def __init__(self, bed: Testbed, name: str, ns: str, uplink: str, port_ns: str, port_if: str) -> None:
        self.bed = bed
        self.name = name
        #: the network namespace's name (`ip netns exec <ns> ...`, `/run/netns/<ns>`)
        self.ns = ns
        #: this node's interface towards its switch (a host's `eth0`, a router's `wan0`)
        self.uplink = uplink
        #: where the other end of the uplink is: the switch (or router) namespace and its port there
        self.port_ns = port_ns
        self.port_if = port_if
        self._shaper = LinkShaper(self, uplink)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ns={self.ns}>"

    # --- processes ----------------------------------------------------------------------------------------------

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """`subprocess.Popen(argv, **kwargs)` inside this namespace (via `ip netns exec`), in a new session unless
        `start_new_session=False` is given; killed and reaped at teardown if still running."""
        return self.bed.processes.popen(self.ns, argv, **kwargs)

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 30.0, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` to completion inside this namespace, output captured as text; `CommandError` on a non-zero
        exit when `check`, `TestbedError` after `timeout` seconds (the process is killed)."""
        return run(netns_exec_argv(self.ns, argv), input=input, timeout=timeout, check=check, env=env)

    def spawn(self, argv: Sequence[str], *, name: str | None = None, env: dict[str, str] | None = None,
              cwd: str | os.PathLike[str] | None = None, stdin: int | IO[Any] | None = subprocess.DEVNULL,
              ) -> ManagedProcess:
        """Start a long-running process here, stdout/stderr to files in the bed's log directory; stopped at
        teardown. `name` (default: the program's name, made unique) names the log files."""
        return self.bed.processes.spawn(self.ns, argv, name=name or f"{self.name}-{Path(str(argv[0])).name}",
                                        env=env, cwd=cwd, stdin=stdin)

    def python(self, code: str, *args: str, timeout: float = 30.0, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `python -c code args...` (this interpreter, `p2p_fast` importable) here to completion."""
        return self.run([sys.executable, "-c", code, *map(str, args)], timeout=timeout, check=check,
                        env=python_env(env))

    def spawn_python(self, code: str, *args: str, name: str | None = None,
                     env: dict[str, str] | None = None) -> ManagedProcess:
        """Start `python -c code args...` here as a managed process (unbuffered output, `p2p_fast` importable)."""
        return self.spawn([sys.executable, "-c", code, *map(str, args)], name=name or f"{self.name}-python",
                          env=python_env(env))

    # --- in-process access --------------------------------------------------------------------------------------

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
        """A socket of this process that lives in this namespace (closed at teardown if still open).

        Lets a test be one of the peers itself, e.g. `trio.socket.from_stdlib_socket(host.socket())`."""
        sock = socket_in_netns(self.ns, family, type, proto)
        self.bed._sockets.append(sock)
        return sock

    def call(self, fn: Callable[[], T]) -> T:
        """Call `fn()` on a helper thread that has entered this namespace, and return its result."""
        return call_in_netns(self.ns, fn)

    def sysctl(self, **settings: str | int) -> None:
        """Set net.* sysctls here; keyword names use `__` for dots: `sysctl(net__ipv4__ip_forward=1)`."""
        sysctl(self.ns, {k.replace("__", "."): v for k, v in settings.items()})

    def iptables(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`iptables -w ARGS...` in this namespace."""
        return self.run([tool("iptables"), "-w", "10", *args], check=check)

    # --- the link ------------------------------------------------------------------------------------------------

    def link_down(self) -> None:
        """Unplug this node's cable: the switch-side end of its link goes down. The node keeps its address and
        routes; everything it sends is lost and nothing reaches it (peers see timeouts, no resets)."""
        ip(self.port_ns, "link", "set", self.port_if, "down")

    def link_up(self) -> None:
        """Plug the cable back in (undo `link_down`)."""
        ip(self.port_ns, "link", "set", self.port_if, "up")

    @property
    def link_is_up(self) -> bool:
        out = ip(self.port_ns, "-o", "link", "show", self.port_if).stdout
        flags = out.split("<", 1)[1].split(">", 1)[0].split(",")
        return "UP" in flags

    def set_netem(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0,
                  rate_kbit: int | None = None) -> None:
        """Impair what this node sends on its uplink, as `tc qdisc replace dev <uplink> root netem ...` does
        (one direction: a round trip through it grows by `delay_ms`). Replaces earlier settings. Uses the netem
        qdisc where the kernel has it, else an equivalent (see `shaping`)."""
        self._shaper.apply(Netem(delay_ms, jitter_ms, loss_pct, rate_kbit))

    def clear_netem(self) -> None:
        """Remove all impairments set by `set_netem`."""
        self._shaper.clear()

    def block(self, *peers: str | Node) -> None:
        """Partition this node from some peers (addresses or nodes): drop all traffic with them, both ways."""
        for addr in self._addrs(peers):
            self.iptables("-I", "INPUT", "-s", addr, "-j", "DROP")
            self.iptables("-I", "OUTPUT", "-d", addr, "-j", "DROP")

    def unblock(self, *peers: str | Node) -> None:
        """Undo `block` for these peers."""
        for addr in self._addrs(peers):
            self.iptables("-D", "INPUT", "-s", addr, "-j", "DROP", check=False)
            self.iptables("-D", "OUTPUT", "-d", addr, "-j", "DROP", check=False)

    @staticmethod
    def _addrs(peers: Sequence[str | Node]) -> list[str]:
        out = []
        for p in peers:
            if isinstance(p, NatRouter):
                out.append(p.wan_ip)
            elif isinstance(p, Host):
                out.append(p.ip)
            else:
                out.append(str(ipaddress.ip_address(p)))
        return out


class Host(Node):
    """A machine: one namespace with `eth0` on the public segment, or on a NAT router's LAN."""

    def __init__(self, bed: Testbed, name: str, ns: str, ip_addr: str, subnet: ipaddress.IPv4Network,
                 gateway: str, port_ns: str, port_if: str, router: NatRouter | None = None) -> None:
        super().__init__(bed, name, ns, "eth0", port_ns, port_if)
        #: this host's address (on the public subnet, or the private LAN behind `router`)
        self.ip = ip_addr
        self.subnet = subnet
        self.gateway = gateway
        #: the NAT router this host sits behind, or None for a public host
        self.router = router

    @property
    def iface(self) -> str:
        return self.uplink

    @property
    def public_ip(self) -> str:
        """The address others on the public segment see this host's connections come from."""
        return self.router.wan_ip if self.router is not None else self.ip


class NatRouter(Node):
    """A home router: `wan0` on the public segment, a LAN bridge `lan0` behind it, MASQUERADE between them.

    Firewall (iptables, in the router's namespace): FORWARD policy DROP; LAN to WAN accepted, WAN to LAN only
    ESTABLISHED,RELATED; unsolicited NEW (and INVALID) packets arriving on `wan0` for the router itself are DROPPED,
    not rejected, so a peer's early SYN during hole punching is silently lost instead of answered with a RST.
    """

    def __init__(self, bed: Testbed, name: str, ns: str, wan_ip: str, lan_subnet: ipaddress.IPv4Network,
                 port_ns: str, port_if: str, random_ports: bool) -> None:
        super().__init__(bed, name, ns, "wan0", port_ns, port_if)
        self.wan_ip = wan_ip
        self.ip = wan_ip
        self.lan_subnet = lan_subnet
        #: the router's own address on the LAN, the private hosts' default gateway
        self.lan_ip = str(lan_subnet.network_address + 1)
        self.lan_iface = "lan0"
        self.random_ports = random_ports
        self.hosts: dict[str, Host] = {}
        self._next_port = 0

    def add_host(self, name: str, *, ip: str | None = None) -> Host:
        """A private host on this router's LAN (default route via the router, no way in from outside)."""
        return self.bed._add_host(name, ip=ip, router=self)

    def _firewall(self) -> str:
        lan, wan = self.lan_iface, self.uplink
        masq = "-j MASQUERADE" + (" --random-fully" if self.random_ports else "")
        return "\n".join([
            "*nat",
            ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
            f"-A POSTROUTING -s {self.lan_subnet} -o {wan} {masq}",
            "COMMIT",
            "*filter",
            ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
            f"-A INPUT -i {wan} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            f"-A INPUT -i {wan} -m conntrack --ctstate NEW,INVALID -j DROP",
            f"-A FORWARD -i {lan} -o {lan} -j ACCEPT",
            f"-A FORWARD -i {lan} -o {wan} -j ACCEPT",
            f"-A FORWARD -i {wan} -o {lan} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "COMMIT",
            "",
        ])


def python_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Python child processes: unbuffered output, this source tree importable."""
    out = dict(os.environ if env is None else env)
    out.setdefault("PYTHONUNBUFFERED", "1")
    path = out.get("PYTHONPATH", "")
    if str(_PROJECT_ROOT) not in path.split(os.pathsep):
        out["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), path) if p)
    return out


class Testbed:
    """A set of network namespaces forming a small internet: a switch, public hosts, NAT routers with private
    hosts, optionally a DNS server. Use as a context manager; `close()` (also run on errors, Ctrl-C and SIGTERM)
    stops every process and deletes every namespace and /etc/netns directory it created.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, subnet: str = DEFAULT_SUBNET, *, label: str = "", keep_workdir: bool | None = None,
                 lan_base: str = DEFAULT_LAN_BASE, prefix: str = "p2pf") -> None:
        self.subnet = ipaddress.IPv4Network(subnet)
        if self.subnet.num_addresses < 8:
            raise ValueError(f"subnet {subnet} is too small")
        self.lan_base = ipaddress.IPv4Network(lan_base)
        #: the public subnet's gateway, on the switch's bridge (it forwards nowhere)
        self.gateway = str(self.subnet.network_address + 1)
        self.label = label
        #: keep the work directory (logs, dnsmasq config) after close; default: env P2P_FAST_TESTBED_KEEP=1
        self.keep_workdir = (os.environ.get("P2P_FAST_TESTBED_KEEP") == "1") if keep_workdir is None else keep_workdir
        self.prefix = prefix
        self.id = ""
        self.workdir = Path()
        self.hosts: dict[str, Host] = {}
        self.nats: dict[str, NatRouter] = {}
        self.dns: Dns | None = None
        self._namespaces: list[str] = []
        self._names: set[str] = set()
        self._public_used: set[str] = {self.gateway}
        self._next_port = 0
        self._sockets: list[socket.socket] = []
        self._started = False
        self._closed = False
        self._lock = threading.RLock()
        self._sigterm_counted = False
        self.processes: ProcessTracker

    def __repr__(self) -> str:
        return f"<Testbed {self.id or '(not started)'} hosts={list(self.hosts)} nats={list(self.nats)}>"

    # --- lifecycle ------------------------------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(raise_errors=exc_type is None)

    def start(self) -> Testbed:
        """Create the switch namespace. Raises `TestbedUnavailable` when the machine cannot host a bed."""
        if self._started:
            return self
        reason = unavailable_reason()
        if reason:
            raise TestbedUnavailable(reason)
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        for _ in range(50):  # claim an id atomically: parallel runs never share one
            candidate = f"{self.prefix}-{secrets.token_hex(2)}"
            if any(p.name.startswith(candidate + "-") for p in _listdir(NETNS_DIR)):
                continue
            try:
                os.close(os.open(REGISTRY_DIR / f"{candidate}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                continue
            self.id = candidate
            break
        else:
            raise TestbedError("could not find an unused test-bed id")
        self._started = True
        _open_beds.add(self)
        self._install_sigterm()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.id}-"))
        (self.workdir / "logs").mkdir()
        self.processes = ProcessTracker(self.workdir / "logs")
        self._write_registry()
        try:
            self.switch_ns = self._new_ns("sw")
            ip_batch(self.switch_ns, [
                "link set lo up",
                "link add br0 type bridge mcast_snooping 0",
                f"addr add {self.gateway}/{self.subnet.prefixlen} dev br0",
                "link set br0 up",
            ])
        except BaseException:
            self.close(raise_errors=False)
            raise
        return self

    def close(self, raise_errors: bool = True) -> None:
        """Tear everything down (idempotent). Problems are collected and raised as one `TestbedError` at the
        end when `raise_errors`, else reported as a warning, so a test's own failure is never masked."""
        with self._lock:
            if self._closed or not self._started:
                self._closed = True
                return
            self._closed = True
        problems: list[str] = []
        try:
            with _interrupts_deferred():
                for sock in self._sockets:
                    sock.close()
                problems += self.processes.stop_all()
                for ns in reversed(self._namespaces):
                    problems += _destroy_ns(ns)
                self._namespaces.clear()
                _remove_registry(self.id)
                if not self.keep_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)
                _open_beds.discard(self)
        finally:
            self._restore_sigterm()
        if problems:
            message = f"test bed {self.id} teardown: " + "; ".join(problems)
            if raise_errors:
                raise TestbedError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def namespaces(self) -> list[str]:
        """Names of all namespaces this bed created (and has not yet deleted)."""
        return list(self._namespaces)

    def log_tails(self, lines: int = 20) -> str:
        """The last lines of every managed process's stdout and stderr, for failure reports."""
        return self.processes.tails(lines)

    # --- building ------------------------------------------------------------------------------------------------

    def add_host(self, name: str, *, ip: str | None = None) -> Host:
        """A host on the public segment (address: `ip`, or the next free one of the public subnet)."""
        return self._add_host(name, ip=ip, router=None)

    def add_nat(self, name: str, *, lan_subnet: str | None = None, wan_ip: str | None = None,
                random_ports: bool = False) -> NatRouter:
        """A NAT router: `wan0` on the public segment, a LAN (`lan_subnet`, default 10.78.<k>.0/24) behind it.

        `random_ports=True` makes it a "hard" NAT (MASQUERADE --random-fully: a new, random source port for each
        mapping), with which hole punching by port prediction fails.
        """
        self._check_open()
        self._claim_name(name)
        if lan_subnet is None:
            k = len(self.nats) + 1
            lan = ipaddress.IPv4Network((int(self.lan_base.network_address) + (k << 8), 24))
        else:
            lan = ipaddress.IPv4Network(lan_subnet)
        wan = self._alloc_public(wan_ip)
        ns = self._new_ns(name)
        port = self._switch_port(ns, "wan0", name)
        prefix = self.subnet.prefixlen
        router = NatRouter(self, name, ns, wan, lan, self.switch_ns, port, random_ports)
        ip_batch(ns, [
            "link set lo up",
            f"addr add {wan}/{prefix} dev wan0",
            "link set wan0 up",
            "link add lan0 type bridge mcast_snooping 0",
            f"addr add {router.lan_ip}/{lan.prefixlen} dev lan0",
            "link set lan0 up",
            f"route add default via {self.gateway}",
        ])
        # Bridged LAN traffic must not go through the router's iptables (its FORWARD policy is DROP).
        run(netns_exec_argv(ns, ["sysctl", "-q", "-e", "-w", "net.ipv4.ip_forward=1",
                                 "net.bridge.bridge-nf-call-iptables=0"]))
        router.run([tool("iptables-restore"), "-w", "10"], input=router._firewall())
        self.nats[name] = router
        return router

    def add_dns(self, records: dict[str, Sequence[str]] | None = None, *, domain: str | None = None,
                ip: str | None = None, extra_config: Sequence[str] = ()) -> Dns:
        """Start the bed's DNS server (dnsmasq in its own namespace on the public segment) and point every
        namespace's resolv.conf at it. See `Dns` for the records. One per bed."""
        from testing.testbed.dns import DEFAULT_DOMAIN, Dns

        self._check_open()
        if self.dns is not None:
            raise TestbedError("this test bed already has a DNS server")
        if ip is None:
            dot53 = str(self.subnet.network_address + 53)
            ip = dot53 if dot53 not in self._public_used and self.subnet.num_addresses > 64 else None
        host = self._add_host("dns", ip=ip, router=None, listed=False)
        self.dns = Dns.start(self, host, records or {}, domain=domain or DEFAULT_DOMAIN, extra_config=extra_config)
        for ns in self._namespaces:
            self._write_etc(ns)
        return self.dns

    # --- internals -----------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._started:
            raise TestbedError("the test bed is not started (use `with Testbed() as bed:` or `bed.start()`)")
        if self._closed:
            raise TestbedError("the test bed is closed")

    def _claim_name(self, name: str) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"bad name {name!r}: use 1-31 of [a-z0-9-], starting with a letter or digit")
        if name in self._names or name == "sw":
            raise ValueError(f"name {name!r} is already used in this test bed")
        self._names.add(name)

    def _alloc_public(self, wanted: str | None) -> str:
        if wanted is not None:
            addr = ipaddress.IPv4Address(wanted)
            if addr not in self.subnet or str(addr) in self._public_used:
                raise ValueError(f"{wanted} is not a free address of {self.subnet}")
            self._public_used.add(str(addr))
            return str(addr)
        for addr in self.subnet.hosts():
            if int(addr) - int(self.subnet.network_address) >= 10 and str(addr) not in self._public_used:
                self._public_used.add(str(addr))
                return str(addr)
        raise TestbedError(f"public subnet {self.subnet} is full")

    def _new_ns(self, name: str) -> str:
        ns = f"{self.id}-{name}"
        self._namespaces.append(ns)
        self._write_registry()  # before creating it: a run killed right after still leaves a record of it
        ip(None, "netns", "add", ns)
        self._write_etc(ns)
        return ns

    def _switch_port(self, peer_ns: str, peer_if: str, label: str) -> str:
        port = f"p{self._next_port}"
        self._next_port += 1
        ip_batch(self.switch_ns, [
            f"link add {port} type veth peer name {peer_if} netns {peer_ns}",
            f"link set {port} alias {label}",
            f"link set {port} master br0",
            f"link set {port} up",
        ])
        return port

    def _add_host(self, name: str, *, ip: str | None, router: NatRouter | None, listed: bool = True) -> Host:
        self._check_open()
        self._claim_name(name)
        if router is None:
            addr, subnet, gateway = self._alloc_public(ip), self.subnet, self.gateway
        else:
            addr, subnet, gateway = _alloc_lan(router, ip), router.lan_subnet, router.lan_ip
        ns = self._new_ns(name)
        if router is None:
            port_ns, port = self.switch_ns, self._switch_port(ns, "eth0", name)
        else:
            port_ns, port = router.ns, f"l{router._next_port}"
            router._next_port += 1
            ip_batch(router.ns, [
                f"link add {port} type veth peer name eth0 netns {ns}",
                f"link set {port} alias {name}",
                f"link set {port} master {router.lan_iface}",
                f"link set {port} up",
            ])
        ip_batch(ns, [
            "link set lo up",
            f"addr add {addr}/{subnet.prefixlen} dev eth0",
            "link set eth0 up",
            f"route add default via {gateway}",
            f"route add {MULTICAST_NET} dev eth0",
        ])
        host = Host(self, name, ns, addr, subnet, gateway, port_ns, port, router)
        if listed:
            self.hosts[name] = host
        if router is not None:
            router.hosts[name] = host
        self._write_etc(ns)
        return host

    def _write_etc(self, ns: str) -> None:
        """/etc/netns/<ns>/resolv.conf and hosts, bind-mounted over /etc/... by `ip netns exec`."""
        d = ETC_NETNS / ns
        d.mkdir(parents=True, exist_ok=True)
        if self.dns is not None:
            resolv = self.dns.resolv_conf()
        else:  # nothing listens there: lookups fail at once instead of reaching for the machine's resolver
            resolv = ("# p2p-fast test bed: no DNS server in this bed\n"
                      "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        for node in [*self.hosts.values(), *self.nats.values()]:
            if node.ns == ns:
                lines.append(f"{node.ip} {node.name}")
        _write_atomic(d / "resolv.conf", resolv)
        _write_atomic(d / "hosts", "\n".join(lines) + "\n")

    def _write_registry(self) -> None:
        doc = {"id": self.id, "pid": os.getpid(), "start": _proc_start_time(os.getpid()), "label": self.label,
               "namespaces": self._namespaces, "workdir": str(self.workdir)}
        _write_atomic(REGISTRY_DIR / f"{self.id}.json", json.dumps(doc))

    def _install_sigterm(self) -> None:
        _sigterm_guard(+1)
        self._sigterm_counted = True

    def _restore_sigterm(self) -> None:
        if self._sigterm_counted:
            self._sigterm_counted = False
            _sigterm_guard(-1)


_sigterm_state: dict[str, Any] = {"beds": 0, "old": None}


def _on_sigterm(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _sigterm_guard(delta: int) -> None:
    """While any bed is open, SIGTERM raises KeyboardInterrupt (if nobody else handles SIGTERM), so `with` blocks
    and fixtures tear down instead of the process dying with namespaces left behind."""
    if threading.current_thread() is not threading.main_thread():
        return
    state = _sigterm_state
    state["beds"] = max(0, state["beds"] + delta)
    if delta > 0 and state["beds"] == 1 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        state["old"] = signal.signal(signal.SIGTERM, _on_sigterm)
    elif state["beds"] == 0 and state["old"] is not None:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, state["old"])
        state["old"] = None


def _alloc_lan(router: NatRouter, wanted: str | None) -> str:
    used = {router.lan_ip} | {h.ip for h in router.hosts.values()}
    if wanted is not None:
        if ipaddress.IPv4Address(wanted) not in router.lan_subnet or wanted in used:
            raise ValueError(f"{wanted} is not a free address of {router.lan_subnet}")
        return wanted
    for addr in router.lan_subnet.hosts():
        if int(addr) - int(router.lan_subnet.network_address) >= 10 and str(addr) not in used:
            return str(addr)
    raise TestbedError(f"LAN {router.lan_subnet} of {router.name} is full")


def _listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except FileNotFoundError:
        return []


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _proc_start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _kill_and_wait(pids: Sequence[int], timeout: float = 3.0) -> list[int]:
    """SIGKILL `pids` and wait (bounded) until they are gone; return those still there."""
    me = os.getpid()
    pids = [p for p in pids if p != me]
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    def all_gone() -> bool:
        return not any(_pid_alive(p) for p in pids)

    with suppress(TimeoutError):
        wait_until(all_gone, timeout, what="killed processes to exit")
    return [p for p in pids if _pid_alive(p)]


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":  # a zombie child of ours: reap it
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _destroy_ns(ns: str) -> list[str]:
    """Kill whatever still runs in `ns`, delete it and its /etc/netns directory. Returns problems found."""
    problems = []
    if (NETNS_DIR / ns).exists():
        left = netns_pids(ns)
        if left:
            survivors = _kill_and_wait(left)
            problems += [f"process {p} survived SIGKILL in {ns}" for p in survivors]
        proc = ip(None, "netns", "del", ns, check=False)
        if proc.returncode != 0 and (NETNS_DIR / ns).exists():
            problems.append(f"could not delete namespace {ns}: {proc.stderr.strip()}")
    shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
    return problems


def _remove_registry(bed_id: str) -> None:
    with suppress(FileNotFoundError):
        (REGISTRY_DIR / f"{bed_id}.json").unlink()


def cleanup_stale() -> list[str]:
    """Remove what test beds of processes that no longer exist left behind (after a `kill -9`, say):
    their namespaces (and anything still running in them), /etc/netns directories and work directories.
    Beds of live processes are left alone. Returns the ids of the beds cleaned up."""
    cleaned = []
    for path in _listdir(REGISTRY_DIR):
        if path.suffix != ".json":
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid = doc.get("pid")
        if isinstance(pid, int) and _pid_alive(pid) and _proc_start_time(pid) == doc.get("start"):
            continue
        for ns in reversed(doc.get("namespaces", [])):
            _destroy_ns(ns)
        workdir = doc.get("workdir")
        if workdir and Path(workdir).name.startswith(str(doc.get("id"))):
            shutil.rmtree(workdir, ignore_errors=True)
        path.unlink(missing_ok=True)
        cleaned.append(str(doc.get("id")))
    return cleaned


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (and our SIGTERM) until the block is done, so a second Ctrl-C cannot cut a teardown short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(sig: int, _frame: Any) -> None:
        pending.append(sig)

    old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if pending:
        raise KeyboardInterrupt(f"signal {pending[0]} during test-bed teardown")


@atexit.register
def _close_open_beds() -> None:
    for bed in list(_open_beds):
        bed.close(raise_errors=False)
