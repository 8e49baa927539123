"""presence-sync between two real hosts over 127.0.0.1: the push-pull version (1.1.0) puts the puller in the view of
the peer it asks, first-hand; a peer that speaks 1.0.0 only still serves its view; a pushed advertisement that does
not describe the peer at the other end of the stream is refused."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.network.stream.exceptions import StreamEOF

from p2p_fast._ext import encode_uvarint
from p2p_fast.core import metrics
from p2p_fast.protocols.codec import encode
from p2p_fast.protocols.messages import CapabilityAdvertisement
from p2p_fast.protocols.presence import PeerBook, Presence
from host_pair import two_hosts

PUSH = "/test-net/presence-sync/1.1.0"
PLAIN = "/test-net/presence-sync/1.0.0"


class _Source:
    """A node's own advertisement: what the application gives presence."""

    def __init__(self, peer_id: str, capabilities: tuple[str, ...]) -> None:
        self.peer_id, self.capabilities, self.seq = peer_id, list(capabilities), 0

    def advertisement(self) -> CapabilityAdvertisement:
        self.seq += 1
        return _ad(self.peer_id, list(self.capabilities), seq=self.seq)

    def presence_signature(self) -> Any:
        return tuple(self.capabilities)


def _presence(host: Any, capabilities: tuple[str, ...]) -> Presence:
    # No gossip here: pulls and their answers use the host's streams only (gossip is what run() and start() add).
    return Presence(host, None, PeerBook(30.0), _Source(str(host.get_id()), capabilities),  # type: ignore[arg-type]
                    ads_topic="test-net/capabilities", sync_protocols=(PUSH, PLAIN), heartbeat_interval=30.0,
                    sync_timeout=10.0)


def _ad(peer_id: str, capabilities: list[str], **kw: Any) -> CapabilityAdvertisement:
    return CapabilityAdvertisement(peer_id=peer_id, role="worker", capabilities=capabilities, slots=2, free_slots=2,
                                   queue_depth=0, load=0.0, **kw)


def _known_third(book: PeerBook) -> None:
    book.on_advertisement(_ad("12D3KooWThird", ["gpu"], ttl_s=90.0))


def test_a_pull_on_1_1_0_puts_the_puller_in_the_servers_view_first_hand():
    async def main() -> None:
        async with two_hosts() as (a, b):
            puller, server = _presence(a, ("compute",)), _presence(b, ("storage",))
            server.serve_sync()
            _known_third(server.book)
            added = await puller.pull(b.get_id())
            assert added == 2  # the server itself and the peer it knew
            assert puller.book.get(str(b.get_id())).capabilities == ["storage"]
            assert puller.book.get("12D3KooWThird").hearsay
            rec = server.book.get(str(a.get_id()))
            assert rec is not None and rec.capabilities == ["compute"] and not rec.hearsay
            assert server.pushed_in == 1
            assert puller.pulled_new == 2
            await puller.pull(b.get_id())  # the same view again: fresher TTLs at most, no peer new to us
            assert puller.pulled_new == 2

    trio.run(main)


def test_a_server_with_only_1_0_0_still_serves_its_view():
    async def main() -> None:
        async with two_hosts() as (a, b):
            puller, server = _presence(a, ("compute",)), _presence(b, ("storage",))
            b.set_stream_handler(PLAIN, server._serve_sync)  # an older node: no push-pull handler
            _known_third(server.book)
            assert await puller.pull(b.get_id()) == 2
            assert server.book.get(str(a.get_id())) is None  # nothing was pushed to it
            assert server.pushed_in == 0

    trio.run(main)


def test_a_pushed_advertisement_for_another_peer_is_refused_and_the_view_still_served():
    async def main() -> None:
        async with two_hosts() as (a, b):
            server = _presence(b, ("storage",))
            server.serve_sync()
            before = metrics.MESSAGES_REJECTED.labels(PUSH, "wrong-sender-or-type")._value.get()
            stream = await a.new_stream(b.get_id(), [PUSH])
            forged = encode(_ad(str(b.get_id()), ["evil"], ttl_s=90.0))
            await stream.write(encode_uvarint(len(forged)) + forged)
            answer = b""
            with trio.fail_after(10):
                try:
                    while chunk := await stream.read(65536):
                        answer += chunk
                except StreamEOF:
                    pass
            await stream.close()
            assert answer  # its own advertisement at least
            assert server.pushed_in == 0
            assert server.book.get(str(b.get_id())) is None  # the forged record is not in its book
            assert metrics.MESSAGES_REJECTED.labels(PUSH, "wrong-sender-or-type")._value.get() == before + 1

    trio.run(main)


def test_a_pull_that_gets_no_answer_in_time_is_retried_soon_not_after_a_refresh_interval():
    """A loaded peer that does not answer within the pull's deadline: no proof of a complete view. Before, the
    timed-out pull read as one that added nothing, and the next came a whole refresh interval (90 s) later."""
    from p2p_fast.protocols.presence import SYNC_FIRST_GAP

    async def main() -> None:
        async with two_hosts() as (a, b):
            async def too_slow(stream: Any) -> None:
                await trio.sleep_forever()

            b.set_stream_handler(PUSH, too_slow)
            puller = Presence(a, None, PeerBook(30.0), _Source(str(a.get_id()), ("compute",)),  # type: ignore[arg-type]
                              ads_topic="test-net/capabilities", sync_protocols=(PUSH, PLAIN),
                              heartbeat_interval=30.0, sync_timeout=0.5)
            with trio.fail_after(10):
                await puller._maybe_sync(trio.current_time())
            assert puller.synced == 0
            assert puller._sync_gap == SYNC_FIRST_GAP < puller.refresh_interval()

    trio.run(main)
