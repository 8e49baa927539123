"""The test bed builds real topologies: these tests send real packets between real namespaces."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from testing.testbed import Testbed, cleanup_stale, wait_until
from testing.testbed._system import ETC_NETNS, REGISTRY_DIR
from testing.testbed.pytest_plugin import require_testbed

pytestmark = pytest.mark.netns

# A TCP server that answers each connection with "<peer ip>:<peer port> <what the peer sent>".
ECHO_PEER_SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
s.settimeout(30)
print("listening", flush=True)
for _ in range(100):
    conn, addr = s.accept()
    with conn:
        data = conn.recv(100).decode()
        conn.sendall(f"{addr[0]}:{addr[1]} {data}".encode())
"""

CLIENT = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as c:
    c.sendall(b"hello")
    print(c.recv(100).decode())
"""

# Both peers run this at the same instant: bind a fixed port, connect() once to the other's NAT address and port.
# There is no listener anywhere, so a connection can only come from a TCP simultaneous open. One attempt only: a
# router that answered the early SYN with a RST (instead of dropping it) would make that attempt fail.
PUNCH = r"""
import socket, sys, time
local_port, peer_ip, peer_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
start_at, me = float(sys.argv[4]), sys.argv[5]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", local_port))
s.settimeout(8)
while time.time() < start_at:
    time.sleep(0.002)
try:
    s.connect((peer_ip, peer_port))
except OSError as exc:
    print("FAILED", repr(exc), flush=True)
    sys.exit(1)
s.settimeout(5)
s.sendall(me.encode())
print("CONNECTED", *s.getpeername(), s.recv(100).decode(), flush=True)
s.close()
"""

RESOLVE = r"""
import json, socket, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = sorted({ai[4][0] for ai in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror as exc:
        out[name] = f"error: {exc}"
print(json.dumps(out))
"""


def _connect_time(host, ip: str, port: int, timeout: float) -> float:
    """Seconds a TCP connect from `host` to ip:port takes; raises what connect raises."""
    with host.socket() as sock:
        sock.settimeout(timeout)
        t0 = time.monotonic()
        sock.connect((ip, port))
        return time.monotonic() - t0


def _listener(host, port: int) -> socket.socket:
    srv = host.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    return srv


def test_two_public_hosts_talk_tcp(testbed):
    a, b = testbed.add_host("a"), testbed.add_host("b")
    server = a.spawn_python(ECHO_PEER_SERVER, "7000", name="server")
    server.wait_for_output("listening", timeout=10)

    reply = b.python(CLIENT, a.ip, "7000", timeout=10).stdout.strip()

    peer, data = reply.split(" ")
    assert peer.split(":")[0] == b.ip
    assert data == "hello"


def test_private_host_reaches_public_host_from_nat_wan_address(testbed):
    relay = testbed.add_host("relay")
    nat = testbed.add_nat("home")
    laptop = nat.add_host("laptop")
    assert laptop.ip.startswith("10.78.1.") and laptop.public_ip == nat.wan_ip
    server = relay.spawn_python(ECHO_PEER_SERVER, "7000", name="server")
    server.wait_for_output("listening", timeout=10)

    reply = laptop.python(CLIENT, relay.ip, "7000", timeout=10).stdout.strip()

    assert reply.split(":")[0] == nat.wan_ip  # the relay sees the NAT, not the private address
    assert reply.endswith(" hello")


def test_public_host_cannot_connect_in_to_private_host(testbed):
    relay = testbed.add_host("relay")
    nat = testbed.add_nat("home")
    laptop, neighbour = nat.add_host("laptop"), nat.add_host("neighbour")
    srv = _listener(laptop, 7000)
    # Control: the server is reachable from its own LAN.
    assert _connect_time(neighbour, laptop.ip, 7000, timeout=3) < 1

    for target in (nat.wan_ip, laptop.ip):  # the NAT's public address, and the private address itself
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):  # silently dropped: not ConnectionRefusedError (no RST comes back)
            _connect_time(relay, target, 7000, timeout=1.0)
        assert time.monotonic() - t0 >= 0.9
    srv.close()


def test_tcp_simultaneous_open_across_two_nats(testbed):
    """Hole punching is possible: two private hosts behind different NATs connect to each other directly."""
    nat1, nat2 = testbed.add_nat("nat1"), testbed.add_nat("nat2")
    a, b = nat1.add_host("a"), nat2.add_host("b")
    start_at = str(time.time() + 1.0)  # both processes started by then; they begin within ~ms of each other
    pa = a.spawn_python(PUNCH, "40001", nat2.wan_ip, "40002", start_at, "a", name="punch-a")
    pb = b.spawn_python(PUNCH, "40002", nat1.wan_ip, "40001", start_at, "b", name="punch-b")

    assert pa.wait(15) == 0, pa.tail()
    assert pb.wait(15) == 0, pb.tail()

    # Each sees the other's NAT WAN address with the port the other bound (MASQUERADE kept the source port).
    assert pa.stdout().split() == ["CONNECTED", nat2.wan_ip, "40002", "b"]
    assert pb.stdout().split() == ["CONNECTED", nat1.wan_ip, "40001", "a"]


def test_kubernetes_style_dns(testbed, testbed_dns_ok):
    relay = testbed.add_host("relay")
    laptop = testbed.add_nat("home").add_host("laptop")
    pods = ["10.77.0.101", "10.77.0.102", "10.77.0.103"]
    dns = testbed.add_dns({"p2p-bootstrap": [relay.ip], "p2p-headless": pods})
    fqdn = "p2p-bootstrap.net-test.svc.cluster.local"

    got = json.loads(relay.python(RESOLVE, "p2p-bootstrap", fqdn, "p2p-headless", "example.com").stdout)
    assert got["p2p-bootstrap"] == [relay.ip]  # short name, through the search domains
    assert got[fqdn] == [relay.ip]
    assert got["p2p-headless"] == pods  # headless service: one A record per pod
    assert got["example.com"].startswith("error")
    # Behind a NAT too (queries go out through the router).
    assert json.loads(laptop.python(RESOLVE, "p2p-bootstrap").stdout)["p2p-bootstrap"] == [relay.ip]
    # Outside cluster.local: refused, nothing is forwarded anywhere.
    assert dns.rcode("example.com") == "REFUSED"
    assert dns.rcode("nothing.net-test.svc.cluster.local") == "NXDOMAIN"

    dns.set_records("p2p-bootstrap", ["10.77.0.200", "10.77.0.201"])  # returns once served, no restart

    assert dns.process.running
    got = json.loads(relay.python(RESOLVE, "p2p-bootstrap").stdout)
    assert got["p2p-bootstrap"] == ["10.77.0.200", "10.77.0.201"]
    dns.remove_records("p2p-headless")
    assert dns.query("p2p-headless") == []


def test_mdns_multicast_crosses_the_bridge(testbed):
    a, b = testbed.add_host("a"), testbed.add_host("b")
    recv = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    recv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    recv.bind(("0.0.0.0", 5353))
    recv.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    socket.inet_aton("224.0.0.251") + socket.inet_aton("0.0.0.0"))
    recv.settimeout(0.2)
    send = a.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no IP_MULTICAST_IF: the host's route must do
    send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)

    def one_round():
        send.sendto(b"mdns-query", ("224.0.0.251", 5353))
        try:
            return recv.recvfrom(100)
        except TimeoutError:
            return None

    data, (src, _port) = wait_until(one_round, 5, what="a multicast datagram from a to b")
    assert data == b"mdns-query" and src == a.ip


def test_link_down_and_block_partition_a_host(testbed):
    a, b = testbed.add_host("a"), testbed.add_host("b")
    srv = _listener(a, 7000)
    assert _connect_time(b, a.ip, 7000, timeout=3) < 1

    a.link_down()
    assert not a.link_is_up
    with pytest.raises(TimeoutError):
        _connect_time(b, a.ip, 7000, timeout=1.0)
    a.link_up()
    wait_until(lambda: _connect_time(b, a.ip, 7000, timeout=0.5) < 1, 5, what="a reachable again",
               ignore=(OSError,))

    a.block(b)
    with pytest.raises(TimeoutError):
        _connect_time(b, a.ip, 7000, timeout=1.0)
    a.unblock(b)
    assert _connect_time(b, a.ip, 7000, timeout=3) < 1
    srv.close()


def test_netem_delay_and_loss(testbed):
    a, b = testbed.add_host("a"), testbed.add_host("b")
    srv = _listener(a, 7000)
    assert _connect_time(b, a.ip, 7000, timeout=3) < 0.1

    a.set_netem(delay_ms=150)  # a's replies (the SYN-ACK) are held for 150 ms
    rtt = min(_connect_time(b, a.ip, 7000, timeout=3) for _ in range(3))
    assert 0.14 <= rtt < 1.0

    a.set_netem(loss_pct=100)
    with pytest.raises(TimeoutError):
        _connect_time(b, a.ip, 7000, timeout=1.0)

    a.clear_netem()
    assert _connect_time(b, a.ip, 7000, timeout=3) < 0.1
    srv.close()


def _our_processes(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


def _assert_gone(bed_id: str, workdir: Path) -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert bed_id not in listed
    assert not list(ETC_NETNS.glob(f"{bed_id}-*"))
    assert not (REGISTRY_DIR / f"{bed_id}.json").exists()
    assert not workdir.exists()
    assert _our_processes(bed_id) == []  # dnsmasq's command line names the bed's work directory


def test_teardown_leaves_nothing_behind(testbed_dns_ok):
    with Testbed(label="teardown-test") as bed:
        nat = bed.add_nat("home")
        pub, priv = bed.add_host("pub"), nat.add_host("priv")
        bed.add_dns({"p2p-bootstrap": [pub.ip]})
        pub.set_netem(delay_ms=10)  # the fallback's delayer process too, where the kernel lacks netem
        sleeper = priv.spawn(["sleep", "60"], name=f"{bed.id}-sleeper")
        # A process that escaped its process group: only the namespace sweep can find it.
        priv.run(["sh", "-c", f"setsid sleep 61 </dev/null >/dev/null 2>&1 & echo $! > {bed.workdir}/escapee"])
        escapee = int((bed.workdir / "escapee").read_text())
        assert sleeper.running and Path(f"/proc/{escapee}").exists()
        assert _our_processes(bed.id)  # dnsmasq is running
        bed_id, workdir = bed.id, bed.workdir
    _assert_gone(bed_id, workdir)
    assert not sleeper.running
    wait_until(lambda: not Path(f"/proc/{escapee}").exists(), 3, what="the escaped process to be gone")

    # Also when the test body fails.
    with pytest.raises(RuntimeError, match="boom"):
        with Testbed() as bed:
            bed.add_nat("home").add_host("priv").spawn(["sleep", "60"])
            bed_id, workdir = bed.id, bed.workdir
            raise RuntimeError("boom")
    _assert_gone(bed_id, workdir)


def test_cleanup_stale_removes_beds_of_dead_processes():
    require_testbed()
    dead = subprocess.Popen(["true"])
    dead.wait()
    bed_id = f"p2pf-stale{dead.pid}"
    ns = f"{bed_id}-x"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    (REGISTRY_DIR / f"{bed_id}.json").write_text(json.dumps(
        {"id": bed_id, "pid": dead.pid, "start": "0", "namespaces": [ns], "workdir": ""}))
    try:
        assert bed_id in cleanup_stale()
        assert not Path(f"/run/netns/{ns}").exists()
        assert not (REGISTRY_DIR / f"{bed_id}.json").exists()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        (REGISTRY_DIR / f"{bed_id}.json").unlink(missing_ok=True)
