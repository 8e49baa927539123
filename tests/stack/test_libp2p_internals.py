"""p2p_fast.stack.libp2p_internals against real py-libp2p objects: each accessor returns what py-libp2p holds, says
None for an object of another class, and fails loudly (naming the attribute) when py-libp2p dropped it."""

from __future__ import annotations

import time

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.host.observed_addr_manager import ObservedAddrManager
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.resources import RelayLimits, RelayResourceManager
from libp2p.security.secure_session import SecureSession

from p2p_fast.stack import libp2p_internals as internals
from p2p_fast.stack import patches

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


def _host():
    return new_host(key_pair=create_new_key_pair())


def test_written_for_the_versions_the_patch_guard_checks():
    assert internals.WRITTEN_FOR is patches.SUPPORTED_VERSIONS  # one tuple: one guard for both
    assert patches.installed_version() in internals.WRITTEN_FOR


def test_observed_addr_manager_is_the_hosts_and_records_what_peers_report():
    host = _host()
    manager = internals.observed_addr_manager(host)
    assert isinstance(manager, ObservedAddrManager)
    assert manager is internals.observed_addr_manager(host)  # the host's own, not a copy
    assert internals.observed_addr_manager(object()) is None  # type: ignore[arg-type]  # not a BasicHost

    disabled = new_host(key_pair=create_new_key_pair(), disable_identify_address_discovery=True)
    assert internals.observed_addr_manager(disabled) is None


def test_observed_addrs_recorded_on_a_real_connection_are_in_the_returned_manager():
    """Two hosts on loopback, one real connection. py-libp2p ignores loopback observations, so the observation is
    recorded the way Identify does (``record_observation``) with a public address; the manager the accessor returns
    is the one that then reports it."""

    async def main():
        a, b = _host(), _host()
        async with a.run(LISTEN), b.run(LISTEN):
            await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
            (conn,) = a.get_network().get_connections(b.get_id())
            manager = internals.observed_addr_manager(a)
            assert manager is not None and manager.addrs(min_observers=1) == []
            port = a.get_addrs()[0].value_for_protocol("tcp")
            manager.record_observation(conn, multiaddr.Multiaddr(f"/ip4/203.0.113.7/tcp/{port}"),
                                       [multiaddr.Multiaddr(str(x).split("/p2p/")[0]) for x in a.get_addrs()])
            assert [str(x) for x in internals.observed_addr_manager(a).addrs(min_observers=1)] == [
                f"/ip4/203.0.113.7/tcp/{port}"]

    trio.run(main)


def test_relay_reservations_lists_every_reservation_of_a_real_resource_manager():
    host = _host()
    manager = RelayResourceManager(RelayLimits(duration=3600, data=1 << 20, max_circuit_conns=4,
                                               max_reservations=8), host)
    assert internals.relay_reservations(manager) == []
    peers = [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(3)]
    for peer in peers:
        assert manager.reserve(peer) > 0
    listed = internals.relay_reservations(manager)
    assert sorted(str(r.peer_id) for r in listed) == sorted(map(str, peers))
    assert {id(r) for r in listed} == {id(r) for r in manager._reservations.values()}  # the manager's objects


def test_connection_opened_at_is_when_the_swarm_opened_it():
    async def main():
        a, b = _host(), _host()
        async with a.run(LISTEN), b.run(LISTEN):
            before = time.time()
            await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
            after = time.time()
            (conn,) = a.get_network().get_connections(b.get_id())
            opened = internals.connection_opened_at(conn)
            assert opened is not None and before <= opened <= after
            assert internals.connection_opened_at(object()) is None  # type: ignore[arg-type]

    trio.run(main)


class _Messages:
    """The decrypted-message side of a secure channel: what a Noise reader hands SecureSession.read_msg."""

    def __init__(self, *messages: bytes) -> None:
        self.messages = list(messages)

    async def read_msg(self) -> bytes:
        return self.messages.pop(0) if self.messages else b""


def _session(*messages: bytes) -> SecureSession:
    keys, remote = create_new_key_pair(), create_new_key_pair()
    return SecureSession(local_peer=ID.from_pubkey(keys.public_key), local_private_key=keys.private_key,
                         remote_peer=ID.from_pubkey(remote.public_key), remote_permanent_pubkey=remote.public_key,
                         is_initiator=True, conn=_Messages(*messages))  # type: ignore[arg-type]


def test_drain_decrypted_takes_what_a_real_secure_session_buffered():
    async def main():
        session = _session(b"0123456789", b"next message")
        assert internals.drain_decrypted(session, 4) == b""  # nothing decrypted yet
        assert await session.read(2) == b"01"  # read one message, buffer the rest
        assert session.high_watermark - session.low_watermark == 8
        assert internals.drain_decrypted(session, 5) == b"23456"  # no await, no new message read
        assert internals.drain_decrypted(session, 10) == b"789"  # never more than it holds
        assert internals.drain_decrypted(session, 1) == b""
        assert await session.read(4) == b"next"  # the session reads on as before

    trio.run(main)


def test_a_missing_attribute_fails_loudly_naming_it():
    manager = RelayResourceManager(RelayLimits(duration=60, data=1024, max_circuit_conns=1, max_reservations=1))
    del manager._reservations  # what a py-libp2p that renamed it would look like
    with pytest.raises(internals.Libp2pInternalsChanged, match=r"RelayResourceManager\._reservations is gone"):
        internals.relay_reservations(manager)
