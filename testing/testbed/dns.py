"""Kubernetes-style DNS for the test bed: dnsmasq in its own namespace, records changeable at runtime.

Names are served the way a cluster's DNS serves them to a pod in namespace `net-test`:
- `p2p-bootstrap.net-test.svc.cluster.local`: a Service, one A record;
- a headless Service: the same name with one A record per pod;
- pods see resolv.conf with `search net-test.svc.cluster.local svc.cluster.local cluster.local` and `ndots:5`,
  so `getaddrinfo("p2p-bootstrap")` finds the Service (py-libp2p's `/dns4/` resolver ignores search domains:
  multiaddrs need the fully qualified name).
Unknown names under cluster.local get NXDOMAIN; everything else is REFUSED (there is no upstream, nothing leaves).

Records live in `--hostsdir`, one hosts-format file per name; dnsmasq rereads a file when it changes (inotify), so
`set_records()` changes what is served without a restart, then waits (bounded) until the server answers with it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from testing.testbed._system import TestbedError, tool
from testing.testbed.process import ManagedProcess, WaitTimeout, wait_until

if TYPE_CHECKING:
    from testing.testbed.topology import Host, Testbed

DEFAULT_DOMAIN = "net-test.svc.cluster.local"
CLUSTER_DOMAIN = "cluster.local"


def search_domains(domain: str = DEFAULT_DOMAIN) -> list[str]:
    """`net-test.svc.cluster.local` -> [that, `svc.cluster.local`, `cluster.local`], as a pod's resolv.conf has."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1) if ".".join(labels[i:]).endswith(CLUSTER_DOMAIN)]


class Dns:
    """The bed's DNS server. Create it with `Testbed.add_dns(records)`."""

    def __init__(self, bed: Testbed, host: Host, hostsdir: Path, domain: str, process: ManagedProcess) -> None:
        self.bed = bed
        #: the namespace dnsmasq runs in (on the public segment)
        self.host = host
        self.ip = host.ip
        self.port = 53
        self.domain = domain
        self.hostsdir = hostsdir
        self.process = process
        self._records: dict[str, list[str]] = {}

    @classmethod
    def start(cls, bed: Testbed, host: Host, records: Mapping[str, Sequence[str]], *, domain: str = DEFAULT_DOMAIN,
              extra_config: Sequence[str] = (), timeout: float = 10.0) -> Dns:
        if not domain.endswith(CLUSTER_DOMAIN):
            raise ValueError(f"domain {domain!r} must be under {CLUSTER_DOMAIN}")
        hostsdir = bed.workdir / "dns-hosts"
        hostsdir.mkdir()
        conf = bed.workdir / "dnsmasq.conf"
        conf.write_text("\n".join([
            "no-resolv",            # no upstream servers: names outside cluster.local are REFUSED
            "no-hosts",             # not the machine's /etc/hosts
            "no-poll",
            "user=root",
            f"pid-file={bed.workdir / 'dnsmasq.pid'}",
            "bind-interfaces",
            f"listen-address={host.ip}",
            "port=53",
            f"local=/{CLUSTER_DOMAIN}/",  # answered from local data only: unknown names get NXDOMAIN
            f"hostsdir={hostsdir}",
            "log-queries",
            "log-facility=-",
            *extra_config,
            "",
        ]))
        process = host.spawn([tool("dnsmasq"), "-k", f"--conf-file={conf}"], name="dnsmasq")
        dns = cls(bed, host, hostsdir, domain, process)
        for name, ips in records.items():
            dns.set_records(name, ips, wait=False)
        try:
            wait_until(lambda: dns.rcode(f"ready-check.{CLUSTER_DOMAIN}", timeout=0.2) is not None, timeout,
                       what=f"dnsmasq to answer on {host.ip}:53", ignore=(OSError, TimeoutError))
        except WaitTimeout as exc:
            raise TestbedError(f"{exc}\n{process.tail()}") from None
        for name, ips in records.items():
            dns.wait_served(name, ips, timeout)
        return dns

    def fqdn(self, name: str) -> str:
        """`p2p-bootstrap` -> `p2p-bootstrap.net-test.svc.cluster.local`; names under cluster.local are kept."""
        name = name.rstrip(".")
        return name if name == CLUSTER_DOMAIN or name.endswith("." + CLUSTER_DOMAIN) else f"{name}.{self.domain}"

    def resolv_conf(self) -> str:
        return (f"# p2p-fast test bed {self.bed.id}\n"
                f"nameserver {self.ip}\n"
                f"search {' '.join(search_domains(self.domain))}\n"
                "options ndots:5 timeout:1 attempts:2\n")

    @property
    def records(self) -> dict[str, list[str]]:
        """What this object last wrote: fully qualified name -> addresses."""
        return {k: list(v) for k, v in self._records.items()}

    def set_records(self, name: str, ips: Sequence[str], *, wait: bool = True, timeout: float = 5.0) -> None:
        """Make `name` (short or fully qualified) resolve to `ips` (several: a headless Service; none: NXDOMAIN).

        dnsmasq picks the change up without a restart; with `wait`, return once it is served (else `WaitTimeout`).
        """
        fqdn = self.fqdn(name)
        path = self.hostsdir / f"{fqdn}.hosts"
        if ips:
            tmp = self.bed.workdir / f".{fqdn}.hosts.tmp"
            tmp.write_text("".join(f"{ip} {fqdn}\n" for ip in ips))
            os.replace(tmp, path)  # one IN_MOVED_TO event: dnsmasq never reads a half-written file
            self._records[fqdn] = list(ips)
        else:
            path.unlink(missing_ok=True)
            self._records.pop(fqdn, None)
        if wait:
            self.wait_served(fqdn, ips, timeout)

    def remove_records(self, name: str, *, wait: bool = True, timeout: float = 5.0) -> None:
        """`set_records(name, [])`: the name stops resolving (NXDOMAIN)."""
        self.set_records(name, [], wait=wait, timeout=timeout)

    def wait_served(self, name: str, ips: Sequence[str], timeout: float = 5.0) -> None:
        """Wait until the server answers A queries for `name` with exactly `ips` (in any order)."""
        want = sorted(ips)
        fqdn = self.fqdn(name)
        wait_until(lambda: sorted(self.query(fqdn, timeout=0.3)) == want, timeout,
                   what=f"DNS to serve {fqdn} -> {want or 'NXDOMAIN'}", ignore=(OSError, TimeoutError))

    def query(self, name: str, rdtype: str = "A", *, timeout: float = 1.0) -> list[str]:
        """Ask the server directly (dnspython, from inside the bed): the answers as text, [] for NXDOMAIN or no
        data. Raises `TimeoutError` if it does not answer in time."""
        response = self._ask(self.fqdn(name) if "." not in name else name, rdtype, timeout)
        return [item.to_text() for rrset in response.answer for item in rrset]

    def rcode(self, name: str, rdtype: str = "A", *, timeout: float = 1.0) -> str:
        """The response code the server gives for `name`, as text: NOERROR, NXDOMAIN, REFUSED, ..."""
        import dns.rcode

        return dns.rcode.to_text(self._ask(name, rdtype, timeout).rcode())

    def _ask(self, name: str, rdtype: str, timeout: float):  # type: ignore[no-untyped-def]
        import dns.exception
        import dns.message
        import dns.query

        sock = self.host.call(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        try:
            sock.setblocking(False)
            return dns.query.udp(dns.message.make_query(name, rdtype), self.ip, timeout=timeout, port=self.port,
                                 sock=sock)
        except dns.exception.Timeout as exc:
            raise TimeoutError(f"no answer from {self.ip}:{self.port} for {name} {rdtype} within {timeout}s") from exc
        finally:
            sock.close()
