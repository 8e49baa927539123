"""Connection-level safety: telling a PSK mismatch apart in dial errors (``handshake``) and the counters of the
security checks (``metrics``). Stream handlers that cannot stop the node are a py-libp2p patch,
:mod:`p2p_fast.stack.patches.stream_handler_guard`. Gossip signature checks and peer scoring are in
:mod:`p2p_fast.stack.pubsub_guard`, the API token in :mod:`p2p_fast.app.api.token`, per-peer task limits in
:mod:`p2p_fast.protocols.tasks.limits`. Membership of the network itself is the PSK (:mod:`p2p_fast.stack.pnet`).
"""
