"""p2p_fast.stack.patches.pubsub_peer_records: stock py-libp2p decodes and verifies a peer's signed record in every
RPC; patched, a registered host verifies the same record bytes from the same peer once, and still rejects a record
claimed by another peer, a tampered one, and re-verifies one the peerstore dropped."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.pubsub.pb import rpc_pb2

import libp2p.pubsub.pubsub as pubsub_mod
import libp2p.pubsub.utils as pubsub_utils
from p2p_fast.stack.patches import pubsub_local_record, pubsub_peer_records
from pubsub_patch_helpers import build_pubsub, count

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
pytestmark = pytest.mark.usefixtures("libp2p_patched")


def test_a_peer_record_is_verified_once_per_bytes(monkeypatch):
    stock = count(monkeypatch, pubsub_peer_records, "STOCK_CONSUME_RECORD")

    async def main():
        a, b, c = (new_host(key_pair=create_new_key_pair()) for _ in range(3))
        async with a.run(LISTEN), b.run(LISTEN), c.run(LISTEN):
            build_pubsub(a, True)
            consume = pubsub_mod.maybe_consume_signed_record
            rpc = rpc_pb2.RPC(senderRecord=pubsub_local_record.STOCK_ENV_TO_SEND(b)[0])
            assert all(consume(rpc, a, b.get_id()) for _ in range(100))
            assert len(stock.calls) == 1
            assert a.get_peerstore().get_peer_record(b.get_id()) is not None

            # the same record claimed by another peer: rejected, every time
            assert not consume(rpc, a, c.get_id())
            assert not consume(rpc, a, c.get_id())
            assert len(stock.calls) == 3

            # a tampered record: rejected
            bad = bytearray(rpc.senderRecord)
            bad[-5] ^= 0xFF
            assert not consume(rpc_pb2.RPC(senderRecord=bytes(bad)), a, b.get_id())

            # the peerstore dropped the record: verified (and stored) again
            stock.calls.clear()
            a.get_peerstore().peer_record_map.pop(b.get_id())
            assert consume(rpc, a, b.get_id())
            assert len(stock.calls) == 1 and a.get_peerstore().get_peer_record(b.get_id()) is not None

    trio.run(main)


def test_stock_decodes_the_record_of_every_rpc_and_the_patch_once(monkeypatch):
    """The limit: stock ``maybe_consume_signed_record`` decodes (and verifies) the envelope of every RPC."""
    decoded = count(monkeypatch, pubsub_utils, "consume_envelope")

    async def main():
        a, b = new_host(key_pair=create_new_key_pair()), new_host(key_pair=create_new_key_pair())
        async with a.run(LISTEN), b.run(LISTEN):
            pubsub_peer_records.cache_peer_records(a)
            rpc = rpc_pb2.RPC(senderRecord=pubsub_local_record.STOCK_ENV_TO_SEND(b)[0])
            pubsub_peer_records.revert()
            try:
                assert pubsub_mod.maybe_consume_signed_record is pubsub_peer_records.STOCK_CONSUME_RECORD
                assert all(pubsub_mod.maybe_consume_signed_record(rpc, a, b.get_id()) for _ in range(50))
                stock_decodes = len(decoded.calls)
            finally:
                pubsub_peer_records.apply()
            decoded.calls.clear()
            assert all(pubsub_mod.maybe_consume_signed_record(rpc, a, b.get_id()) for _ in range(50))
            assert stock_decodes == 50
            assert len(decoded.calls) <= 1

    trio.run(main)
