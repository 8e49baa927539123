"""p2p_fast.stack.patches.muxer_registered_class: the Yamux class registered in ``muxer_opt`` is used (stock first,
then patched)."""

from __future__ import annotations

import trio

from p2p_fast.stack.patches import muxer_registered_class


def test_the_yamux_class_registered_in_muxer_opt_is_used():
    """``new_host(muxer_opt={"/yamux/1.0.0": Subclass})`` builds ``Subclass`` connections."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID, Yamux

    class MyYamux(Yamux):
        pass

    async def muxer_types() -> set[type]:
        listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
        a = new_host(key_pair=create_new_key_pair(), muxer_opt={PROTOCOL_ID: MyYamux})
        b = new_host(key_pair=create_new_key_pair(), muxer_opt={PROTOCOL_ID: MyYamux})
        async with a.run(listen), b.run(listen):
            await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
            return {type(a.get_network().get_connections(b.get_id())[0].muxed_conn),
                    type(b.get_network().get_connections(a.get_id())[0].muxed_conn)}

    muxer_registered_class.revert()
    try:
        stock = trio.run(muxer_types)
    finally:
        muxer_registered_class.apply()
    # The bug: once Yamux is negotiated, py-libp2p builds its own class, whatever was registered.
    assert stock == {Yamux}
    assert trio.run(muxer_types) == {MyYamux}
