"""p2p_fast.stack.patches.negotiate_removed_handler: a handler removed during negotiation fails the stream, not the
node (stock first, then patched)."""

from __future__ import annotations

import trio

from p2p_fast.stack.patches import negotiate_removed_handler


def test_a_handler_removed_during_negotiation_fails_the_stream_not_the_node():
    """The communicator is the stream side of multistream-select: it answers the handshake, asks for a
    protocol and, while the answer is being written (the await where it happens in a node: the DHT switching to
    client mode), the protocol's handler is removed."""
    from libp2p.protocol_muxer.exceptions import MultiselectError
    from libp2p.protocol_muxer.multiselect import MULTISELECT_PROTOCOL_ID, Multiselect

    proto = "/ipfs/kad/1.0.0"

    class Communicator:
        def __init__(self, muxer: Multiselect) -> None:
            self.muxer = muxer
            self.incoming = [MULTISELECT_PROTOCOL_ID, proto]

        async def read(self) -> str:
            await trio.lowlevel.checkpoint()
            return self.incoming.pop(0)

        async def write(self, msg: str) -> None:
            await trio.lowlevel.checkpoint()
            if msg == proto:
                self.muxer.remove_handler(proto)

    async def handler(stream) -> None:
        pass

    async def negotiate() -> str:
        muxer = Multiselect({proto: handler})
        try:
            await muxer.negotiate(Communicator(muxer))
        except MultiselectError:
            return "stream refused"
        except KeyError:
            return "KeyError"
        return "negotiated"

    negotiate_removed_handler.revert()
    try:
        assert trio.run(negotiate) == "KeyError"  # the stock bug: escapes and ends the swarm's stream task
    finally:
        negotiate_removed_handler.apply()
    assert trio.run(negotiate) == "stream refused"
