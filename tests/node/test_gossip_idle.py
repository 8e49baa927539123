"""``p2p_fast.stack.patches.gossip_idle``: stock GossipSub walks every peer on every heartbeat while nothing happens;
patched, idle heartbeats are skipped, and the mesh is still repaired as with stock (message delivery after idle: tests/scale). Real py-libp2p
hosts over 127.0.0.1 in one trio loop."""

from __future__ import annotations

import copy

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import PeerScorer
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast.stack import pubsub_guard
from p2p_fast.stack.patches import gossip_idle

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
TOPIC = "p2p-fast/idle-test"
TICK = 0.05  # heartbeat interval of every router here
PEERS = 5


class Counted:
    """Counts calls of one router's ``mesh_heartbeat`` (its per-peer walk) without changing it."""

    def __init__(self, router: GossipSub) -> None:
        self.calls = 0
        stock = router.mesh_heartbeat

        def mesh_heartbeat():
            self.calls += 1
            return stock()

        router.mesh_heartbeat = mesh_heartbeat


async def _wait(predicate, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(TICK / 2)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _join(nursery, centre_host, count: int):
    """``count`` new hosts, each connected to the centre and subscribed to TOPIC: (hosts, routers, subscriptions)."""
    hosts = [new_host(key_pair=create_new_key_pair()) for _ in range(count)]
    routers, subs = [], []
    for host in hosts:
        await nursery.start(_run_host, host)
        router = GossipSub(protocols=["/meshsub/1.1.0"], degree=2, degree_low=2, degree_high=3,
                           heartbeat_interval=TICK, heartbeat_initial_delay=TICK,  # type: ignore[arg-type]
                           prune_back_off=1, spam_protection_enabled=False,
                           score_params=pubsub_guard.score_params())
        pubsub = Pubsub(host, router)
        await nursery.start(_run_service, pubsub)
        await nursery.start(_run_service, router)
        await pubsub.wait_until_ready()
        routers.append(router)
        if centre_host is not None:
            await host.connect(info_from_p2p_addr(centre_host.get_addrs()[0]))
        subs.append(await pubsub.subscribe(TOPIC))
    return hosts, routers, subs


async def _run_host(host, task_status=trio.TASK_STATUS_IGNORED):
    async with host.run(LISTEN):
        task_status.started()
        await trio.sleep_forever()


async def _run_service(service, task_status=trio.TASK_STATUS_IGNORED):
    async with background_trio_service(service):
        task_status.started()
        await trio.sleep_forever()


def _run(patched: bool) -> dict:
    (gossip_idle.apply if patched else gossip_idle.revert)()
    out: dict = {}

    async def main():
        async with trio.open_nursery() as nursery:
            (centre_host,), (centre,), (centre_sub,) = await _join(nursery, None, 1)
            hosts, routers, subs = await _join(nursery, centre_host, PEERS)
            # Every peer grafts the centre; the centre keeps its mesh within [2, 3] (the pruned ones back off).
            await _wait(lambda: 2 <= len(centre.mesh.get(TOPIC, ())) <= 3 and len(centre.pubsub.peer_topics.get(
                TOPIC, ())) == PEERS, 10, "the centre's mesh within its degrees")
            await trio.sleep(20 * TICK)  # the joins settle and the message cache empties
            counter = Counted(centre)
            await trio.sleep(40 * TICK)
            out["idle_walks"] = counter.calls
            # Two of its mesh peers leave: the centre's mesh falls under degree_low, and its heartbeats graft the
            # peers it had pruned (their back-off, 1 s here, over).
            gone = set(list(centre.mesh[TOPIC])[:2])
            for pid in gone:
                await centre_host.disconnect(pid)
            await _wait(lambda: len(centre.mesh.get(TOPIC, ())) >= 2 and not gone & centre.mesh[TOPIC], 10,
                        "the centre's mesh refilled")
            out["repaired"] = True
            out["stats"] = gossip_idle.stats(centre)
            # Connections closed before the swarms stop (see tests/host_pair.py: else a socket is left unclosed).
            for host in hosts:
                if host.get_id() in centre_host.get_connected_peers():
                    await centre_host.disconnect(host.get_id())
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        gossip_idle.revert()
    return out


def test_idle_heartbeats_skip_the_per_peer_walk_and_the_mesh_is_still_repaired():
    stock = _run(patched=False)
    patched = _run(patched=True)
    # Stock walks every peer on (about) every one of the 40 idle ticks; patched once every IDLE_FULL_EVERY ticks.
    assert stock["idle_walks"] >= 20, stock
    assert patched["idle_walks"] <= 40 // gossip_idle.IDLE_FULL_EVERY + 6, patched  # + the joins' tail
    assert patched["idle_walks"] * 3 <= stock["idle_walks"], (stock, patched)
    assert patched["stats"]["skipped"] >= 20, patched
    for run in (stock, patched):
        assert run["repaired"] is True


@pytest.mark.parametrize("k", [1, 2, 7])
def test_one_decay_of_k_steps_equals_k_stock_steps(k):
    scorer = PeerScorer(pubsub_guard.score_params())
    peer = create_new_key_pair().public_key
    from libp2p.peer.id import ID

    pid = ID.from_pubkey(peer)
    scorer.first_message_deliveries[pid][TOPIC] = 30.0
    scorer.invalid_messages[pid][TOPIC] = 4.0
    scorer.behavior_penalty[pid] = 12.0
    stepwise = copy.deepcopy(scorer)
    for _ in range(k):
        stepwise.on_heartbeat()
    gossip_idle.decay(scorer, k)
    assert scorer.first_message_deliveries[pid][TOPIC] == pytest.approx(stepwise.first_message_deliveries[pid][TOPIC])
    assert scorer.invalid_messages[pid][TOPIC] == pytest.approx(stepwise.invalid_messages[pid][TOPIC])
    assert scorer.behavior_penalty[pid] == pytest.approx(stepwise.behavior_penalty[pid])
    assert scorer.params == pubsub_guard.score_params()  # the stock parameters are back
