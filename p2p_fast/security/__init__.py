"""Who may do what: the HTTP API's bearer token, who may submit tasks to a worker and how fast, and the checks on
gossip (signatures with reasons, peer scoring).

Each module is small and has no state beyond what it is given: ``token`` (API token and its ASGI middleware),
``limits`` (token-bucket rate limits per peer, the submitter policy of a worker), ``gossip_guard`` (signature
verification that says why it refused, peer-score parameters) and ``handshake`` (telling a PSK mismatch apart in
dial errors). Membership of the network itself is the private-network PSK (``p2p_fast.pnet``).
"""
