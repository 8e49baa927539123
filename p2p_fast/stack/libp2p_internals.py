"""Every read of py-libp2p's private state outside the patches folder, one typed function per access.

py-libp2p 0.8.1 keeps a few things we need in attributes with a leading underscore and offers no public way to get
them. Rather than scatter ``obj._name`` (or ``getattr(obj, "_name", None)``) through the package, the rest of
p2p-fast calls the functions here; each names the attribute it reads and why there is no public API, and
``tests/packaging/test_private_names.py`` fails on a private attribute used anywhere else (the patch modules in
``p2p_fast/stack/patches/`` excepted: changing py-libp2p's private state is what they are for).

These were written for the py-libp2p versions in :data:`WRITTEN_FOR`, which *is* the patches' tuple
(``p2p_fast.stack.patches.SUPPORTED_VERSIONS``): the version guard that ``build_host`` runs before any patch
(``apply_all`` -> ``check_version``) covers this module too, and a new supported version has to be checked here as
well as in the patches. When a py-libp2p object of the expected class lacks the attribute, an accessor raises
:class:`Libp2pInternalsChanged` naming it, instead of quietly returning nothing.

Accesses that stay outside, on purpose: a subclass of ours reading or overriding its py-libp2p base class's private
members (``self._x``, ``super()._x``: ``CircuitTransport``, ``AutoNAT``, ``RelayProtocol``, ``HolePuncher``,
``FastYamux``; listed in ``docs/libp2p-patches.md``, "Not patches").
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost, INetConn
from libp2p.host.basic_host import BasicHost
from libp2p.host.observed_addr_manager import ObservedAddrManager
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.relay.circuit_v2.resources import RelayResourceManager, Reservation
from libp2p.security.secure_session import SecureSession

from p2p_fast.stack.patches import SUPPORTED_VERSIONS, installed_version

#: the py-libp2p versions whose private attributes these functions read: the patches' own tuple (one guard for both)
WRITTEN_FOR: tuple[str, ...] = SUPPORTED_VERSIONS

_MISSING = object()


class Libp2pInternalsChanged(RuntimeError):
    """A py-libp2p private attribute this module reads is not there: the installed py-libp2p is not one it was
    written for."""


def _read(obj: object, owner: type, name: str) -> Any:
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        raise Libp2pInternalsChanged(
            f"{owner.__module__}.{owner.__qualname__}.{name} is gone in the installed py-libp2p "
            f"{installed_version() or '(unknown)'}; p2p_fast.stack.libp2p_internals was written for py-libp2p "
            f"{', '.join(WRITTEN_FOR)}")
    return value


def observed_addr_manager(host: IHost) -> ObservedAddrManager | None:
    """The host's tracker of the addresses peers observed us at (Identify), or None when it has none.

    Reads ``BasicHost._observed_addr_manager`` (py-libp2p 0.8.1, ``host/basic_host.py``; None when the host was
    built with ``disable_identify_address_discovery``). The host uses it only inside ``get_addrs`` (merged with the
    listen addresses, above its activation threshold of several observers); AutoNAT needs the observations of a
    single peer (``addrs(min_observers=1)``) to predict a port-preserving NAT's mapping, and no public method of
    the host returns them. A host of another class (not a ``BasicHost``) has none: None."""
    if not isinstance(host, BasicHost):
        return None
    manager = _read(host, BasicHost, "_observed_addr_manager")
    return manager if isinstance(manager, ObservedAddrManager) else None


def relay_reservations(manager: RelayResourceManager) -> list[Reservation]:
    """Every reservation a relay's resource manager holds, expired ones included (the caller filters).

    Reads ``RelayResourceManager._reservations`` (py-libp2p 0.8.1, ``relay/circuit_v2/resources.py``, a dict
    peer ID -> ``Reservation``). Its public methods answer for one peer (``has_reservation``,
    ``get_reservation``); none lists them, and a relay's status (how many peers it serves, how many circuits) needs
    all of them."""
    reservations = _read(manager, RelayResourceManager, "_reservations")
    return list(reservations.values())


def connection_opened_at(conn: INetConn) -> float | None:
    """When the swarm opened ``conn``, on the wall clock (``time.time()``); None for a connection of another class.

    Reads ``SwarmConn._created_at`` (py-libp2p 0.8.1, ``network/connection/swarm_connection.py``), which
    py-libp2p's own connection pruner uses to keep old connections. ``INetConn`` has no method for it, and our
    connection manager prunes by the same age."""
    if not isinstance(conn, SwarmConn):
        return None
    opened = _read(conn, SwarmConn, "_created_at")
    return float(opened) if isinstance(opened, (int, float)) else None


def drain_decrypted(session: SecureSession, n: int) -> bytes:
    """Up to ``n`` bytes the secure session has already decrypted and buffered, taken without an await (b"" when it
    holds none).

    Calls ``SecureSession._drain`` (py-libp2p 0.8.1, ``security/secure_session.py``), the first step of its public
    ``read``. ``read`` is a coroutine that goes on to wait for the next Noise message when the buffer runs short;
    our Yamux frame loop (``p2p_fast.stack.muxer``) takes a frame body that is already buffered without that await
    (it checks ``high_watermark - low_watermark``, public attributes, first), once per frame."""
    return session._drain(n)  # the one call site of a private method outside the patches (see the module doc)
