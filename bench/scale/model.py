"""Per-node message rates and CPU of an idle-ish p2p-fast network of N nodes, from the design and measured costs.

    .venv/bin/python bench/scale/model.py [--markdown]        # the table in docs/scale.md

What one node sends and receives per second, term by term (parameters below, each with where it comes from):

- presence refresh: every advertisement reaches every node, and each node refreshes every
  ``refresh_interval(hb, N) = max(3 hb, N / TARGET_RECEIVE_RATE)`` s (``p2p_fast.protocols.presence``), so a node
  receives ``N / refresh`` = at most ``TARGET_RECEIVE_RATE`` first copies a second, whatever N;
- presence churn: join (first, one retry while the mesh forms, one when it delivers, then len(JOIN_REPEATS)) and
  goodbye (1) advertisements per session, network-wide: a node
  receives ``N x (adverts per session) / session length``: the one term that grows with N, through churn, not size;
- GossipSub relaying: each first copy is forwarded to the other mesh peers, and each node receives about one copy
  per mesh peer (first + duplicates, dropped by the seen cache); the mesh holds ``MESH`` peers on average, between
  ``gossip.degree`` and ``degree_high`` (grafts from other nodes keep it near the top);
- IHAVE gossip: one control message per heartbeat to ``max(gossip.lazy_degree, 25 %)`` of the peers outside the
  mesh (``p2p_fast.stack.patches.gossip_lazy_degree``), only while the
  message cache holds ids of the topic (``gossip_window`` heartbeats after a message): for the presence topic, most
  heartbeats once a node receives more than 1/3 advertisement a second; the user's gossip topic is idle here;
- liveness: one ping per connection per liveness interval, both ways (the connection manager bounds connections);
- DHT: every PROVIDE_EVERY s a worker re-provides each capability with chance ``provide_chance(N)`` (about 4
  providers per capability and round, whatever N); a provide is a lookup of about ``alpha x log2(N)`` queries plus
  ``k`` ADD_PROVIDER messages, spread over the network: per node
  ``caps x provide_chance(N) x (alpha log2 N + k) / PROVIDE_EVERY``, O(log N / N);
- capability lookups: only for a capability no live peer advertises (rare; not counted).

CPU: ``receive_ms`` per message received and ``send_ms`` per message sent, the paced (250 msg/s, each message on its
own) figures of bench/RESULTS.md "Gossip and transport", the expensive end; plus the measured idle cost of one
connection when nothing is sent (``--idle-per-conn-ms``, bench/RESULTS.md "Idle cost per connection").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from p2p_fast.protocols.presence import JOIN_REPEATS, TARGET_RECEIVE_RATE, refresh_interval  # noqa: E402

JOIN_ADVERTS = 3 + len(JOIN_REPEATS)  # first, one retry (a mesh forming takes a heartbeat or two), at delivery, repeats
from p2p_fast.protocols.tasks.service import PROVIDE_EVERY, provide_chance  # noqa: E402
from p2p_fast.core.config import GossipSection  # noqa: E402
from p2p_fast.stack.patches.gossip_lazy_degree import GOSSIP_FACTOR  # noqa: E402

MESH = 5  # mean mesh size: gossip.degree 4 .. degree_high 6 (config defaults)
LAZY_DEGREE = GossipSection().lazy_degree  # IHAVE targets per heartbeat: max(this, GOSSIP_FACTOR x non-mesh peers)
GOSSIP_WINDOW = GossipSection().gossip_window  # heartbeats a message id stays in IHAVE gossip
HEARTBEAT_S = GossipSection().heartbeat_interval  # seconds (config default)
NODE_HEARTBEAT_S = 30.0  # node.heartbeat_interval of node/worker.yaml
CONNECTIONS_HIGH = 24  # connections a node keeps at most (network.conn_high, config default)
LIVENESS_S = 30.0  # one ping per connection per node heartbeat
DHT_ALPHA, DHT_K = 3, 20
CAPS = 2  # compute, storage
SESSION_S = 86400.0  # mean time a node stays (churn)
RECEIVE_MS = 0.733  # CPU ms per delivered message, subscriber, paced 250 msg/s (bench/RESULTS.md)
SEND_MS = 0.787  # CPU ms per published message, publisher, paced 250 msg/s (bench/RESULTS.md)


def per_node(n: int, idle_per_conn_ms: float, session_s: float = SESSION_S) -> dict[str, float]:
    conns = min(n - 1, CONNECTIONS_HIGH)
    refresh = refresh_interval(NODE_HEARTBEAT_S, n)
    first_copies_refresh = (n - 1) / refresh
    first_copies_churn = (n - 1) * (JOIN_ADVERTS + 1) / session_s
    first = first_copies_refresh + first_copies_churn
    received = first * min(MESH, conns)  # the first copy and a duplicate from each other mesh peer
    forwarded = first * max(min(MESH, conns) - 1, 0)
    # IHAVE goes out on a heartbeat only while the message cache holds ids of the topic (GOSSIP_WINDOW heartbeats
    # after a message): the presence topic, at the rate above; the user's gossip topic is idle here.
    holds_ids = min(1.0, first * GOSSIP_WINDOW * HEARTBEAT_S)
    outside = max(conns - MESH, 0)
    ihave = min(max(LAZY_DEGREE, int(GOSSIP_FACTOR * outside)), outside) * holds_ids / HEARTBEAT_S
    pings = 2 * conns / LIVENESS_S
    dht = CAPS * provide_chance(n) * (DHT_ALPHA * math.log2(max(n, 2)) + DHT_K) / PROVIDE_EVERY
    msgs_in = received + ihave + pings / 2 + dht
    msgs_out = forwarded + 1 / refresh + ihave + pings / 2 + dht
    cpu_ms = msgs_in * RECEIVE_MS + msgs_out * SEND_MS + conns * idle_per_conn_ms
    return {"nodes": n, "connections": conns, "refresh_s": round(refresh, 1),
            "presence_first_copies_per_s": round(first, 3), "presence_churn_part": round(first_copies_churn, 3),
            "messages_in_per_s": round(msgs_in, 2), "messages_out_per_s": round(msgs_out, 2),
            "dht_messages_per_s": round(dht, 3), "cpu_pct_of_core": round(cpu_ms / 10, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle-per-conn-ms", type=float, default=0.0,
                    help="measured CPU ms per second per idle connection (bench/RESULTS.md)")
    ap.add_argument("--session-s", type=float, default=SESSION_S, help="mean node session, for churn")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    rows = [per_node(n, args.idle_per_conn_ms, args.session_s) for n in (10, 100, 1000, 10_000, 100_000)]
    if not args.markdown:
        print(json.dumps(rows, indent=1))
        return
    print("| nodes | connections | refresh interval | presence adverts received/s (of which churn) | messages in/s "
          "| messages out/s | DHT messages/s | CPU, % of a core |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['nodes']:,} | {r['connections']} | {r['refresh_s']} s | {r['presence_first_copies_per_s']} "
              f"({r['presence_churn_part']}) | {r['messages_in_per_s']} | {r['messages_out_per_s']} | "
              f"{r['dht_messages_per_s']} | {r['cpu_pct_of_core']} |")


if __name__ == "__main__":
    main()
