"""The py-libp2p 0.8.1 relay/AutoNAT bugs the subclasses of p2p_fast.protocols.nat correct (CircuitTransport, AutoNAT,
RelayProtocol): each test shows the stock behaviour first (so it fails, and tells us to drop the work-around, once
py-libp2p is fixed), then ours. The bugs corrected by patches of py-libp2p itself (circuit dialing, our own peer
ID, circuit addresses in get_addrs, DCUtR's listen addresses) are shown in tests/stack/patches/.

In-process hosts on 127.0.0.1 (stock ``new_host``: TCP, Noise, Yamux), a relay R and peers A, B.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.host.autonat.autonat import AutoNATService
from libp2p.host.autonat.pb.autonat_pb2 import Message
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP, CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast.protocols.nat.autonat import AutoNAT
from p2p_fast.protocols.nat.relay import RELAY_LIMITS, RelayProtocol
from p2p_fast.stack.patches.circuit_dialing import install_circuit_dialing
from relay_hosts import DEAD, b_transport as _b_transport, hosts, relay_setup, run


# -- 2-3: the circuit transport (bugs 1 and 4: tests/stack/patches/test_circuit_dialing.py) -------------------------

def test_bug_tcp_claims_circuit_addresses_and_work_around():
    async def main() -> tuple[str, str]:
        async with hosts(1) as (h,):
            circuit = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/4001/p2p/{h.get_id()}/p2p-circuit/p2p/{h.get_id()}")
            manager = h.get_network().transport_manager
            stock = type(manager.transport_for_dialing(circuit)).__name__
            undo = install_circuit_dialing(h, _b_transport(h), dial_timeout=5)
            try:
                ours = type(manager.transport_for_dialing(circuit)).__name__
            finally:
                undo()
            return stock, ours

    stock, ours = run(main)
    assert stock == "TCP"  # bug 2: TCP.can_dial says yes to .../tcp/../p2p/R/p2p-circuit/p2p/X
    assert ours == "CircuitTransport"


def test_bug_circuit_transport_dial_returns_upgraded_conn_and_work_around():
    async def main() -> tuple[str, bool]:
        async with relay_setup() as (r, a, b, circuit):
            stock_transport = CircuitV2Transport(b, CircuitV2Protocol(b), RelayConfig(roles=RelayRole.STOP))
            stock_transport.listen_order = lambda: -1  # type: ignore[attr-defined]  # ahead of TCP (bug 2)
            manager = b.get_network().transport_manager
            manager.add_transport(stock_transport)
            try:
                with pytest.raises(Exception) as stock:
                    await b.get_network()._dial_addr_single_attempt(circuit, a.get_id())
            finally:
                manager._transports.remove(stock_transport)
            for c in list(b.get_network().get_connections(a.get_id())):
                await c.close()
            ours = _b_transport(b)
            raw = await ours.dial(circuit)
            ok = not hasattr(raw, "muxed_conn") and hasattr(raw, "read")
            await raw.close()
            return f"{type(stock.value).__name__}: {stock.value}", ok

    stock, ours_is_raw = run(main)
    assert "IRawConnection" in stock, stock  # bug 3: dial() returns a SwarmConn, the swarm wants a raw conn
    assert ours_is_raw


# -- 6: AutoNAT dial-back reuses the requester's connection -----------------------------------------------------------

def test_bug_autonat_dial_back_never_dials_and_work_around():
    async def main() -> tuple[int, int]:
        async with hosts(3) as (stock_server, our_server, client):
            AutoNATService(stock_server, serve=True)
            AutoNAT(our_server, serve=True, dial_timeout=3)
            asker = AutoNATService(client, serve=False)
            verdicts = []
            for server in (stock_server, our_server):
                await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
                # The client asks to be dialed at an address where nothing listens.
                status, _addr = await asker.query_server(server.get_id(), addrs=[DEAD.to_bytes()], timeout=10)
                verdicts.append(status)
            return verdicts[0], verdicts[1]

    stock, ours = run(main)
    assert stock == Message.OK  # bug 6: host.connect() returns the existing connection, nothing is dialed
    assert ours == Message.E_DIAL_ERROR


def test_autonat_dial_back_reaches_a_listening_peer():
    async def main() -> int:
        async with hosts(2) as (server, client):
            AutoNAT(server, serve=True, dial_timeout=3)
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            conns_before = len(server.get_network().get_connections(client.get_id()))
            status, addr = await AutoNATService(client, serve=False).query_server(
                server.get_id(), addrs=[a.to_bytes() for a in client.get_addrs()], timeout=10)
            assert len(server.get_network().get_connections(client.get_id())) == conns_before  # probe not kept
            return status

    assert run(main) == Message.OK


# -- 7-8: circuit relay protocol ---------------------------------------------------------------------------------------

def test_bug_inbound_circuit_address_names_ourselves_as_relay_and_work_around():
    async def inbound_addrs(protocol_cls: type) -> tuple[list[str], Any, Any, Any]:
        async with relay_setup(protocol_cls) as (r, a, b, circuit):
            undo = install_circuit_dialing(b, _b_transport(b), dial_timeout=10)
            try:
                await b.connect(PeerInfo(a.get_id(), [circuit]))
                with trio.fail_after(5):
                    while not a.get_network().get_connections(b.get_id()):
                        await trio.sleep(0.05)
                await trio.sleep(0.1)
                addrs = [str(x) for c in a.get_network().get_connections(b.get_id())
                         for x in c.get_transport_addresses()]
            finally:
                undo()
            return addrs, r.get_id(), a.get_id(), b.get_id()

    async def main() -> tuple[Any, Any]:
        return await inbound_addrs(CircuitV2Protocol), await inbound_addrs(RelayProtocol)

    (stock, _r, a, b), (ours, r, _a, b2) = run(main)
    assert stock == [f"/p2p/{a}/p2p-circuit/p2p/{b}"]  # bug 7: "relay" = the receiving peer itself
    assert len(ours) == 1 and ours[0].endswith(f"/p2p/{r}/p2p-circuit/p2p/{b2}") and ours[0].startswith("/ip4/")


def test_bug_relay_reserves_for_the_peer_named_in_the_message_and_work_around():
    async def reserved_for(protocol_cls: type) -> tuple[set[ID], ID, ID]:
        async with hosts(3) as (r, x, y), AsyncExitStack() as stack:
            proto = protocol_cls(r, limits=RELAY_LIMITS, allow_hop=True)
            await stack.enter_async_context(background_trio_service(proto))
            for h in (x, y):
                await h.connect(PeerInfo(r.get_id(), r.get_addrs()))
            stream = await x.new_stream(r.get_id(), [HOP])
            # X asks for a reservation in Y's name.
            await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE,
                                                         peer=CircuitPeerId(id=y.get_id().to_bytes())))
            with trio.fail_after(5):
                await read_delimited_msg(stream, HopMessage)
            await stream.close()
            return set(proto.resource_manager._reservations), x.get_id(), y.get_id()

    async def main() -> tuple[Any, Any]:
        return await reserved_for(CircuitV2Protocol), await reserved_for(RelayProtocol)

    (stock, _x, y), (ours, x2, _y) = run(main)
    assert stock == {y}  # bug 8: anyone can reserve (and use up) slots in another peer's name
    assert ours == {x2}


# -- 10: a stale (valid) signed record makes Pubsub drop the whole RPC -----------------------------------------------

def test_bug_older_signed_record_is_rejected_and_our_address_change_refreshes_pubsubs_record():
    from types import SimpleNamespace

    from libp2p.peer.peerstore import env_to_send_in_RPC
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.pubsub.utils import maybe_consume_signed_record

    from p2p_fast.stack.patches import pubsub_local_record
    from p2p_fast.protocols.nat.service import NatService

    sender, receiver = (new_host(key_pair=create_new_key_pair()) for _ in range(2))
    addrs = [multiaddr.Multiaddr("/ip4/10.0.0.1/tcp/4001")]
    sender.get_addrs = lambda: list(addrs)  # type: ignore[method-assign]
    pubsub_local_record.cache_local_record(sender)  # as for a tuned pubsub
    old, _ = pubsub_local_record.cached_env_to_send_in_RPC(sender)

    addrs.append(multiaddr.Multiaddr(f"/ip4/10.0.0.2/tcp/4001/p2p/{receiver.get_id()}/p2p-circuit"))
    new, created = env_to_send_in_RPC(sender)  # what Identify (push) or the DHT sends after the change
    assert created and new != old
    # The tuned pubsub keeps sending the old record until it re-checks (ADDRS_RECHECK_S)...
    assert pubsub_local_record.cached_env_to_send_in_RPC(sender)[0] == old

    def consume(record: bytes) -> bool:
        return maybe_consume_signed_record(rpc_pb2.RPC(senderRecord=record), receiver, sender.get_id())

    assert consume(new)
    # ...and a receiver holding the new one rejects it: Pubsub.continuously_read_stream then skips the RPC,
    # published messages and all (bug 10: a stale but valid record is treated as invalid).
    assert not consume(old)

    NatService._refresh_signed_record(SimpleNamespace(host=sender))  # type: ignore[arg-type]
    assert pubsub_local_record.cached_env_to_send_in_RPC(sender)[0] == new  # ours: pubsub sends the new one at once
