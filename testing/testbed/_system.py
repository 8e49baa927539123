"""The layer under the test bed: running commands, entering network namespaces, probing what the machine can do.

Everything here is synchronous and bounded: every command has a timeout, every probe cleans up after itself.
"""

from __future__ import annotations

import ctypes
import functools
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
#: Where each live test bed records what it created, so `cleanup_stale()` can remove what a killed run left behind.
REGISTRY_DIR = Path("/run/p2p-fast-testbed")

# `ip`, `iptables` and friends live in /usr/sbin, which a non-login shell's PATH may lack.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin")
TOOL_PATH = os.pathsep.join(p for p in dict.fromkeys([*os.environ.get("PATH", "").split(os.pathsep), *_SBIN]) if p)

#: Debian package that provides each tool, for error messages and skip reasons.
DEBIAN_PACKAGE = {
    "ip": "iproute2",
    "tc": "iproute2",
    "iptables": "iptables",
    "iptables-restore": "iptables",
    "dnsmasq": "dnsmasq-base",
}

COMMAND_TIMEOUT = 30.0


class TestbedError(RuntimeError):
    """Building or tearing down the test bed failed."""

    __test__ = False  # not a pytest test class


class TestbedUnavailable(TestbedError):
    """The machine lacks a capability the test bed needs (root, `ip netns`, a tool); the message says which."""


class CommandError(TestbedError):
    """A command run by the test bed exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).strip()
        super().__init__(f"`{' '.join(self.argv)}` exited {returncode}" + (f": {detail}" if detail else ""))


def tool(name: str) -> str:
    """Absolute path of a system tool, or raise `TestbedUnavailable` naming the Debian package to install."""
    path = shutil.which(name, path=TOOL_PATH)
    if path is None:
        pkg = DEBIAN_PACKAGE.get(name)
        raise TestbedUnavailable(f"`{name}` not found" + (f" (Debian package {pkg})" if pkg else ""))
    return path


def tool_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for processes we start: the caller's, with the sbin directories on PATH."""
    out = dict(os.environ if env is None else env)
    out["PATH"] = TOOL_PATH
    return out


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with captured text output; raise `CommandError` on failure when `check`."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=tool_env(env),
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc


def netns_exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """`ip netns exec NS ARGV...`: runs ARGV in namespace NS with /etc/netns/NS/* bind-mounted over /etc."""
    return [tool("ip"), "netns", "exec", ns, *(str(a) for a in argv)]


def ip(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ip [-n NS] ARGS...`."""
    prefix = [tool("ip")] + (["-n", ns] if ns else [])
    return run([*prefix, *args], check=check)


def ip_batch(ns: str | None, lines: Sequence[str]) -> None:
    """Several `ip` commands in one process (`ip -batch -`): one fork instead of one per command."""
    if not lines:
        return
    prefix = [tool("ip")] + (["-n", ns] if ns else [])
    run([*prefix, "-batch", "-"], input="\n".join(lines) + "\n")


def sysctl(ns: str, settings: dict[str, str | int]) -> None:
    """Set sysctls inside a namespace (net.* sysctls are per namespace)."""
    run(netns_exec_argv(ns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())]))


# --- entering a namespace from this process -------------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def call_in_netns(ns: str, fn: Callable[[], T], timeout: float = 10.0) -> T:
    """Call `fn()` on a short-lived thread that has entered network namespace `ns`.

    The namespace of a thread is its own: this process's other threads stay where they are. Sockets created by
    `fn` belong to `ns` for their whole life, so they can be used from any thread afterwards (that is how
    `Host.socket()` gives a test an in-process socket inside a host).
    """
    result: list[T] = []
    error: list[BaseException] = []

    def worker() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller below
            error.append(exc)

    thread = threading.Thread(target=worker, name=f"netns:{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TestbedError(f"call in namespace {ns} did not return within {timeout:.0f}s")
    if error:
        raise error[0]
    return result[0]


def socket_in_netns(
    ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A socket living in network namespace `ns`, usable from any thread of this process (from trio too, via
    `trio.socket.from_stdlib_socket`)."""
    return call_in_netns(ns, lambda: socket.socket(family, type, proto))


# --- capability probes ------------------------------------------------------------------------------------------------


def _probe_netns() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return (f"needs root to create network namespaces, veths, bridges and iptables rules "
                f"(running as uid {os.geteuid()})")
    try:
        for name in ("ip", "iptables", "iptables-restore"):
            tool(name)
    except TestbedUnavailable as exc:
        return str(exc)
    ns = f"p2pf-probe-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        try:
            ip(None, "netns", "add", ns)
        except TestbedError as exc:
            return f"`ip netns add` failed: {exc}"
        try:
            ip_batch(ns, ["link set lo up", "link add p0 type veth peer name p1", "link add br0 type bridge",
                          "link set p0 master br0"])
        except TestbedError as exc:
            return f"veth/bridge creation inside a namespace failed: {exc}"
        try:
            run(netns_exec_argv(ns, [tool("iptables"), "-w", "5", "-t", "nat", "-S"]))
        except TestbedError as exc:
            return f"iptables (nat table) does not work inside a namespace: {exc}"
    finally:
        ip(None, "netns", "del", ns, check=False)
    return None


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why the test bed cannot run here (not root, no `ip netns`, no iptables, ...), or None if it can.

    The answer comes from actually creating (and deleting) a probe namespace, once per process.
    """
    return _probe_netns()


def available() -> bool:
    """True when `Testbed` can build namespaces, bridges, veths and iptables rules on this machine."""
    return unavailable_reason() is None


@functools.lru_cache(maxsize=1)
def dns_unavailable_reason() -> str | None:
    """Why `Testbed.add_dns()` cannot work here, or None. Includes the base reason."""
    base = unavailable_reason()
    if base:
        return base
    try:
        tool("dnsmasq")
    except TestbedUnavailable as exc:
        return str(exc)
    try:
        import dns.query  # noqa: F401  (dnspython, used to wait until records are served)
    except ImportError:
        return "dnspython is not installed (PyPI package dnspython)"
    return None


@functools.lru_cache(maxsize=1)
def netem_supported() -> bool:
    """Whether the kernel has the `netem` qdisc (some minimal kernels lack CONFIG_NET_SCH_NETEM)."""
    if unavailable_reason() is not None:
        return False
    ns = f"p2pf-probe-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        ip(None, "netns", "add", ns)
        ip_batch(ns, ["link add p0 type veth peer name p1", "link set p0 up"])
        return run([tool("tc"), "-n", ns, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"],
                   check=False).returncode == 0
    except TestbedError:
        return False
    finally:
        ip(None, "netns", "del", ns, check=False)


def netns_exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def netns_pids(ns: str) -> list[int]:
    """Pids of all processes whose network namespace is `ns` (`ip netns pids`)."""
    proc = ip(None, "netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]
