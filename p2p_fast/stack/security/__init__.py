"""Connection-level safety: telling a PSK mismatch apart in dial errors (``handshake``), stream handlers that cannot
stop the node (``handler_guard``) and their counters (``metrics``). Gossip signature checks and peer scoring are in
:mod:`p2p_fast.stack.pubsub_guard`, the API token in :mod:`p2p_fast.app.api.token`, per-peer task limits in
:mod:`p2p_fast.protocols.tasks.limits`. Membership of the network itself is the PSK (:mod:`p2p_fast.stack.pnet`).
"""
