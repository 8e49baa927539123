"""What a node hands its task service: the one place where the application reaches into the ``Node`` for tasks.

The task package (``p2p_fast.protocols.tasks``) never sees the node; it gets a ``TaskEnv`` of narrow parts
(host, config section, peer book, DHT, RTTs, event bus, load shedder), built here when the node starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AsyncContextManager, Callable

from p2p_fast.protocols.tasks.ports import TaskEnv

if TYPE_CHECKING:
    from p2p_fast.app.node import Node


def task_env(node: Node) -> TaskEnv:
    """The task service's view of ``node`` (started: host, DHT and health monitor are up)."""
    assert node.host is not None
    cfg = node.cfg
    return TaskEnv(
        host=node.host, tasks=cfg.tasks, protocol_version=cfg.network.protocol_version,
        connection_timeout=cfg.network.connection_timeout, task_protocol=cfg.protocol_id("task"),
        blob_protocol=cfg.protocol_id("blob"), data_dir=node.data_dir, capabilities=lambda: node.capabilities,
        book=node.book, dht=node.dht, rtt=node.health, events=node.events, shedder=node.shedder,
        private_network=node.private_network, on_storage_failure=node.fail, transient_dials=_transient(node))


def _transient(node: Node) -> Callable[[], AsyncContextManager[None]] | None:
    """The connection manager's :meth:`~p2p_fast.stack.connmgr.ConnManager.transient`, keeping the connector's
    target number of peers."""
    connmgr, connector = node.connmgr, node.connector
    if connmgr is None or connector is None:
        return None
    return lambda: connmgr.transient(keep=connector.target_peers)
