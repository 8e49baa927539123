"""p2p_fast.stack.patches.pubsub_local_record: stock py-libp2p lists our addresses and rebuilds our signed record
for every outgoing RPC; patched, a registered host's envelope is built once and re-checked every ADDRS_RECHECK_S,
with the same bytes, and hosts not registered go through stock every time."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.envelope import consume_envelope

import libp2p.pubsub.pubsub as pubsub_mod
from p2p_fast.stack.patches import pubsub_local_record
from p2p_fast.stack.patches.pubsub_local_record import _LOCAL_RECORDS
from pubsub_patch_helpers import build_pubsub, count

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
pytestmark = pytest.mark.usefixtures("libp2p_patched")


def test_our_record_is_built_once_and_rebuilt_when_addresses_change(monkeypatch):
    stock_env = count(monkeypatch, pubsub_local_record, "STOCK_ENV_TO_SEND")

    async def main():
        host, other = new_host(key_pair=create_new_key_pair()), new_host(key_pair=create_new_key_pair())
        async with host.run(LISTEN), other.run(LISTEN):
            build_pubsub(host, True)
            build_pubsub(other, False)
            stock_bytes, _ = stock_env.fn(host)
            stock_env.calls.clear()
            sent = {pubsub_mod.env_to_send_in_RPC(host)[0] for _ in range(200)}
            assert sent == {stock_bytes}  # the same envelope stock would send
            assert len(stock_env.calls) <= 1

            # an untuned host in the same process still goes through stock every time
            for _ in range(3):
                pubsub_mod.env_to_send_in_RPC(other)
            assert sum(1 for c in stock_env.calls if c[0] is other) == 3

            # our addresses change: the next check (at most ADDRS_RECHECK_S later) issues a new record
            extra = multiaddr.Multiaddr(f"/ip4/10.1.2.3/tcp/4001/p2p/{host.get_id()}")
            addrs = host.get_addrs() + [extra]
            monkeypatch.setattr(host, "get_addrs", lambda: addrs)
            _LOCAL_RECORDS[host].checked_at = 0.0
            new_bytes, created = pubsub_mod.env_to_send_in_RPC(host)
            assert created and new_bytes != stock_bytes
            _, record = consume_envelope(new_bytes, "libp2p-peer-record")
            assert extra in record.addrs

    trio.run(main)


def test_stock_lists_our_addresses_for_every_rpc_and_the_patch_once():
    """The limit: each stock ``env_to_send_in_RPC`` call asks the host for its addresses (and compares and
    re-serialises the record); patched, 100 RPCs of a registered host ask once."""

    async def main():
        host = new_host(key_pair=create_new_key_pair())
        async with host.run(LISTEN):
            listed = []
            real_get_addrs = host.get_addrs

            def get_addrs():
                listed.append(1)
                return real_get_addrs()

            host.get_addrs = get_addrs  # type: ignore[method-assign]
            pubsub_local_record.cache_local_record(host)
            pubsub_local_record.revert()
            try:
                assert pubsub_mod.env_to_send_in_RPC is pubsub_local_record.STOCK_ENV_TO_SEND
                stock = {pubsub_mod.env_to_send_in_RPC(host)[0] for _ in range(100)}
                stock_calls = len(listed)
            finally:
                pubsub_local_record.apply()
            listed.clear()
            ours = {pubsub_mod.env_to_send_in_RPC(host)[0] for _ in range(100)}
            assert stock_calls >= 100
            assert len(listed) <= 2  # the first RPC only: our check, then the stock build of the envelope
            assert ours == stock  # the same envelope

    trio.run(main)


def test_expire_makes_the_next_rpc_recheck_at_once():
    async def main():
        host = new_host(key_pair=create_new_key_pair())
        async with host.run(LISTEN):
            pubsub_local_record.cache_local_record(host)
            first, _ = pubsub_mod.env_to_send_in_RPC(host)
            addrs = host.get_addrs() + [multiaddr.Multiaddr(f"/ip4/10.9.9.9/tcp/1/p2p/{host.get_id()}")]
            host.get_addrs = lambda: addrs  # type: ignore[method-assign]
            assert pubsub_mod.env_to_send_in_RPC(host)[0] == first  # cached: not re-checked yet
            pubsub_local_record.expire_local_record(host)
            second, created = pubsub_mod.env_to_send_in_RPC(host)
            assert created and second != first

    trio.run(main)
