"""Checks on the node that runs with this config: its gossip topics and mesh, and its peers' clocks.

The node is found through ``<data_dir>/node.json`` (written at start, names its HTTP API) or ``--api``. Its
``/v1/status`` has ``topics`` (each subscribed topic and its GossipSub mesh size) and ``peers``; ``/v1/peers`` has
``clock_offset_s`` per peer: our wall clock minus the ``sent_at`` of the peer's CapabilityAdvertisements (gossip, at
join, on change and on each refresh; the smallest of the last few, with ``clock_samples`` their number), i.e. the
clock skew plus the delivery time, milliseconds on a LAN. That is the one wall-clock reading every peer already sends
us, so the check needs no extra protocol and no access to the peers.
"""

from __future__ import annotations

from typing import Any

import httpx

from p2p_fast.core.config import Config
from p2p_fast.app.remote import running_node_url
from p2p_fast.app.doctor.report import OK, PROBLEM, SKIPPED, Check

TOPICS = ("gossip", "capabilities")  # every role subscribes to these (Node.running, Presence)


def find_api(cfg: Config, api: str | None) -> str | None:
    if api:
        return api.rstrip("/")
    return running_node_url(cfg.data_path)


async def _get(client: httpx.AsyncClient, url: str) -> Any:
    r = await client.get(url)
    r.raise_for_status()
    return r.json()


CLOCK_MIN_SAMPLES = 3  # advertisements that must agree before a positive offset is called a clock behind


async def check_running_node(cfg: Config, url: str | None, max_skew: float) -> list[Check]:
    if url is None:
        why = f"no node runs on the data dir {cfg.data_path} (no live {cfg.data_path}/node.json)"
        return [Check("gossip", SKIPPED, f"{why}; start it, or pass --api URL"),
                Check("clock", SKIPPED, why)]
    from p2p_fast.app.api.token import load_api_token

    token = load_api_token(cfg)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(timeout=10, headers=headers) as client:
            status = await _get(client, url + "/v1/status")
            peers = await _get(client, url + "/v1/peers")
    except (httpx.HTTPError, ValueError) as exc:
        return [Check("running node", PROBLEM, f"its API at {url} did not answer: {exc!r}",
                      "is the node up (its log), and http.listen reachable from here?")]
    return [check_gossip(cfg, status), check_clock(peers, max_skew)]


def check_gossip(cfg: Config, status: dict[str, Any]) -> Check:
    topics: dict[str, int] = status.get("topics") or {}
    want = [cfg.topic(t) for t in TOPICS]
    missing = [t for t in want if t not in topics]
    shown = ", ".join(f"{t} mesh {n}" for t, n in sorted(topics.items()))
    if missing:
        return Check("gossip", PROBLEM, f"not subscribed to {', '.join(missing)} (has: {shown or 'none'})",
                     "the node runs another protocol_version than this config, or another config: restart it "
                     "with this one")
    empty = [t for t in want if topics.get(t, 0) == 0]
    peers = int(status.get("peers") or 0)
    if peers and empty:
        return Check("gossip", PROBLEM, f"{peers} peer(s) connected but an empty mesh on {', '.join(empty)} ({shown})",
                     "the peers subscribe to other topics: check network.protocol_version on both sides "
                     "(a mesh also needs a heartbeat or two after connecting)")
    if not peers:
        return Check("gossip", PROBLEM, f"subscribed ({shown}) but no peer connected",
                     "see the bootstrap checks above; /readyz says why the node is not ready")
    return Check("gossip", OK, f"{shown}; {peers} peer(s)")


def check_clock(peers: list[dict[str, Any]], max_skew: float) -> Check:
    """Each offset is our clock minus the peer's ``sent_at`` (the smallest over its last advertisements): skew plus
    delivery delay, and the delay is never negative. Beyond ``max_skew``, a negative offset is a clock ahead whatever
    the delay; a positive one is called a problem only when ``CLOCK_MIN_SAMPLES`` advertisements agree, since one late
    delivery (a node starting on a busy machine) reads the same as a clock behind."""
    offsets = {p["peer_id"]: (p["clock_offset_s"], int(p.get("clock_samples") or 1))
               for p in peers if p.get("clock_offset_s") is not None}
    if not offsets:
        return Check("clock", SKIPPED, "no peer advertisement with a timestamp received yet (nodes advertise at join and on each refresh)")
    worst_peer, (worst, _) = max(offsets.items(), key=lambda kv: abs(kv[1][0]))
    detail = f"largest offset {worst:+.3f} s (peer {worst_peer}) over {len(offsets)} peer(s)"
    skewed = {pid: off for pid, (off, n) in offsets.items()
              if off < -max_skew or (off > max_skew and n >= CLOCK_MIN_SAMPLES)}
    if skewed:
        pid, off = max(skewed.items(), key=lambda kv: abs(kv[1]))
        return Check("clock", PROBLEM, f"offset {off:+.3f} s (peer {pid}) over {len(offsets)} peer(s): beyond "
                                       f"{max_skew:g} s",
                     "synchronise the clocks (chrony or systemd-timesyncd on the hosts; pods use their node's "
                     "clock): task deadlines, receipts and logs compare wall-clock times across nodes")
    if abs(worst) > max_skew:
        n = offsets[worst_peer][1]
        detail += (f"; from {n} advertisement(s) only, that is delivery delay or clock: called a problem once "
                   f"{CLOCK_MIN_SAMPLES} agree")
    return Check("clock", OK, detail)
