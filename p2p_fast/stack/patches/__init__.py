"""Every change p2p-fast makes to py-libp2p's behaviour: one module per upstream bug or limit, applied by one
explicit call, reversible, and refused on a py-libp2p version they were not written for.

Process-wide patches (module or class attributes of py-libp2p) are listed in :data:`PROCESS_WIDE`; each module has
``apply()`` and ``revert()`` (idempotent; ``revert`` restores the exact stock objects) and a docstring naming the
py-libp2p function it corrects. :func:`apply_all` applies them all, after :func:`check_version`;
``p2p_fast.stack.host.build_host`` calls it, and nothing is applied at import time. :func:`revert_all` undoes them
(for tests that show stock behaviour).

``lean_imports`` is process-wide too, but must act before py-libp2p is first imported, which host construction is
too late for: entry points call :func:`prepare_imports` first (``p2p_fast.app.cli.main``). In :func:`apply_all` it
is a no-op once py-libp2p is loaded.

Per-instance patches change one py-libp2p object we hold (a host's ``get_addrs``, a swarm's ``dial_peer``, a
Pubsub's counter). There is nothing process-wide to apply: each is a function that takes the instance, and all
but a few of the Pubsub ones and ``inline_metrics`` return their undo. They are listed in :data:`PER_INSTANCE`
(module -> function) and called where the instance is built. Two patches have both halves
(``pubsub_local_record``, ``pubsub_peer_records``: module hooks that act only for hosts registered per instance);
``pubsub_tuning.tune_pubsub`` applies the seven pubsub ones to the Pubsub we build.

Not patches (no py-libp2p object changes for anyone else): subclasses of ours handed to py-libp2p through a
documented argument (``FastYamux`` via ``new_host(muxer_opt=...)``; ``CircuitTransport`` via
``transport_manager.add_transport``), and subclasses we construct and run ourselves (``GuardedPubsub``,
``IndexedKadDHT``, ``AutoNAT``, ``RelayProtocol``, ``HolePuncher``). Some override private methods of py-libp2p
0.8.1, which is one more reason for the version guard; each says why in its docstring. The table of all of them,
with the upstream bug and the test that shows it, is in ``docs/libp2p-patches.md``.

The version guard: :data:`SUPPORTED_VERSIONS` are the py-libp2p versions these were written and tested for. On any
other, :func:`apply_all` raises :class:`UnsupportedLibp2pVersion`; setting ``P2P_FAST_ALLOW_LIBP2P_VERSION`` to the
installed version (or ``any``) applies them anyway, with a warning.

The same :data:`SUPPORTED_VERSIONS` covers ``p2p_fast.stack.libp2p_internals`` (its ``WRITTEN_FOR`` is this tuple),
where the rest of the package reads py-libp2p state that has no public API.

This package's own import loads nothing of py-libp2p (so :func:`prepare_imports` can run first).
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.8.1",)
ALLOW_ENV = "P2P_FAST_ALLOW_LIBP2P_VERSION"

#: process-wide patches, in the order they are applied (reverted in reverse)
PROCESS_WIDE: tuple[str, ...] = (
    "lean_imports",
    "dial_first_success",
    "muxer_registered_class",
    "task_parent_index",
    "negotiate_removed_handler",
    "tcp_buffering",
    "dcutr_listen_addrs",
    "pubsub_local_record",
    "pubsub_peer_records",
    "pubsub_signer_keys",
    "pubsub_subscription_buffer",
)

#: per-instance patches: module -> the function that patches one instance (see the module doc)
PER_INSTANCE: dict[str, str] = {
    "pubsub_seqno": "start_seqno_from_nanoseconds(pubsub)",
    "pubsub_stream_retry": "retry_negotiation_failures(pubsub) -> undo",
    "pubsub_hello_race": "announce_late_subscriptions(pubsub) -> undo",
    "pubsub_replay_own": "replay_only_own(router) -> undo",
    "pubsub_tasks": "spawn_pushes_in(pubsub, nursery)",
    "pubsub_overflow": "count_overflow(pubsub, topic)",
    "pubsub_message_ids": "constructor_kwargs() + replace_caches(pubsub, seen_ttl)",
    "pubsub_local_record": "cache_local_record(host)",
    "pubsub_peer_records": "cache_peer_records(host)",
    "pubsub_own_signature": "record_own_signatures(pubsub) -> undo",
    "pubsub_batched_sending": "batch_sending(pubsub) -> undo",
    "gossip_ihave_shedding": "shed_gossip_ihave(router, shedder) -> undo",
    "gossip_lazy_degree": "set_lazy_degree(router, lazy_degree) -> undo",
    "gossip_opportunistic_graft": "graft_opportunistically_as_specified(router) -> undo",
    "gossip_prune_backoff": "back_off_pruned_peers(router) -> undo",
    "stream_handler_guard": "guard_stream_handlers(host) -> undo",
    "outbound_handshake_watch": "watch_outbound_handshakes(host, private, connection_timeout) -> undo",
    "auto_connector_off": "disable_auto_dials(host) -> undo",
    "inline_metrics": "record_libp2p_metrics(host)",
    "circuit_dialing": "install_circuit_dialing(host, transport, dial_timeout) -> undo",
    "host_circuit_addrs": "append_addrs(host, extra) -> undo",
}


class UnsupportedLibp2pVersion(RuntimeError):
    """The installed py-libp2p is not one the patches were written for."""


def installed_version() -> str | None:
    try:
        return version("libp2p")
    except PackageNotFoundError:
        return None


def check_version(installed: str | None = None) -> str:
    """The installed py-libp2p version if the patches support it (or the override allows it); else raise
    :class:`UnsupportedLibp2pVersion` saying what is installed, what is supported and how to override."""
    found = installed if installed is not None else installed_version()
    if found in SUPPORTED_VERSIONS:
        return found
    allowed = os.environ.get(ALLOW_ENV, "")
    if found is not None and allowed in (found, "any"):
        log.warning("py-libp2p %s is not one the p2p-fast patches were written for (%s); applying them anyway "
                    "because %s=%s", found, ", ".join(SUPPORTED_VERSIONS), ALLOW_ENV, allowed)
        return found
    raise UnsupportedLibp2pVersion(
        f"py-libp2p {found or '(not installed)'} is installed, but p2p-fast's py-libp2p patches "
        f"(p2p_fast/stack/patches) were written for py-libp2p {', '.join(SUPPORTED_VERSIONS)}. Install one of "
        f"those (pip install 'libp2p=={SUPPORTED_VERSIONS[-1]}'), or set {ALLOW_ENV}={found or 'any'} to apply "
        f"them anyway at your own risk (each patch's module names the py-libp2p function it replaces).")


def patch_module(name: str) -> ModuleType:
    """The module of a registered patch (process-wide or per-instance)."""
    if name not in PROCESS_WIDE and name not in PER_INSTANCE:
        raise KeyError(f"no patch named {name!r}; known: {', '.join(sorted({*PROCESS_WIDE, *PER_INSTANCE}))}")
    return importlib.import_module(f"{__name__}.{name}")


def prepare_imports() -> bool:
    """Apply ``lean_imports`` before py-libp2p is first imported (entry points call this first). True if it did;
    False when py-libp2p is already loaded, switched off (``P2P_FAST_LEAN_IMPORTS=0``) or of another version
    (which :func:`apply_all` then refuses)."""
    from p2p_fast.stack.patches import lean_imports

    return lean_imports.install()


def apply_all() -> list[str]:
    """Check the py-libp2p version, then apply every process-wide patch (idempotent). Returns their names."""
    check_version()
    for name in PROCESS_WIDE:
        patch_module(name).apply()
    return list(PROCESS_WIDE)


def revert_all() -> None:
    """Undo :func:`apply_all`: every patched attribute holds its stock object again (idempotent)."""
    for name in reversed(PROCESS_WIDE):
        patch_module(name).revert()
