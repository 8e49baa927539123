"""Start-up without the parts of py-libp2p a node never runs: QUIC (on aioquic), WebSocket (trio-websocket, wsproto)
and AutoTLS's ACME/broker clients
(on requests, httpx and, through httpx's command line, rich and click), and dnspython's DNS-over-QUIC (aioquic again).

py-libp2p 0.8 imports them at module level although only a QUIC listen address or AutoTLS uses them:
``libp2p/__init__`` (``QUICTransport``, ``is_quic_multiaddr`` for ``new_host``'s transport choice),
``libp2p.transport`` (``WebsocketTransport``),
``libp2p.custom_types`` (``QUICStream`` in a type alias) and ``libp2p.host.basic_host`` (``ACMEClient``,
``compute_b36_peer_id``, ``BrokerClient``). That is 0.3-0.4 s of CPU on every start of every node (measured in
bench/RESULTS.md, "Start-up CPU and RSS"), and memory that stays.

:func:`install` (alias :func:`apply`) puts a stand-in for each of those modules into ``sys.modules`` before
py-libp2p is imported. A stand-in offers the names those imports take; using any of them (constructing a
``QUICTransport``, calling ``is_quic_multiaddr``, running AutoTLS) removes every stand-in and imports the real
modules, then delegates, so the behaviour is stock, only later. Nothing of py-libp2p is copied. Only for the
py-libp2p versions in ``CHECKED_VERSIONS`` (the import sites above are specific to them); for any other, and with
``P2P_FAST_LEAN_IMPORTS=0``, nothing is replaced. :func:`revert` puts the real modules back and rebinds every name
py-libp2p took from a stand-in to the real object.

It has to act before anything imports py-libp2p, so it is the one patch not applied from host construction: the
entry points call :func:`p2p_fast.stack.patches.prepare_imports` first (``p2p_fast.app.cli.main`` for ``p2p-node``
and ``python -m p2p_fast``); importing ``p2p_fast`` applies nothing. Upstream: a limit of py-libp2p 0.8.1's
module-level imports (the sites above); no upstream issue was found. ``tests/stack/patches/test_lean_imports.py``
checks both paths.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from importlib.metadata import PackageNotFoundError, version
from typing import Any

CHECKED_VERSIONS = ("0.8.1",)  # the versions p2p_fast.stack.patches supports (a test keeps the two equal)
# module -> the names imported from it at module level elsewhere in py-libp2p (classes first-letter upper)
STAND_INS: dict[str, tuple[str, ...]] = {
    "libp2p.transport.quic.utils": ("is_quic_multiaddr",),
    "libp2p.transport.quic.transport": ("QUICTransport",),
    "libp2p.transport.quic.stream": ("QUICStream",),
    "libp2p.security.tls.autotls.acme": ("ACMEClient", "compute_b36_peer_id"),
    "libp2p.security.tls.autotls.broker": ("BrokerClient",),
    "libp2p.transport.websocket.transport": ("WebsocketTransport",),
}
_MARK = "__p2p_fast_stand_in__"
_FORWARDS = "__p2p_fast_forwards__"  # on a forwarder: (module, name) of the real object it stands for


def is_stand_in(module: Any) -> bool:
    return bool(getattr(module, _MARK, False))


def load_real() -> None:
    """Replace every stand-in by the real module (idempotent)."""
    stand_ins = {name: sys.modules.pop(name) for name in STAND_INS if is_stand_in(sys.modules.get(name))}
    for name in STAND_INS:
        if name in stand_ins:
            importlib.import_module(name)


def _real(module: str, name: str) -> Any:
    if is_stand_in(sys.modules.get(module)):
        load_real()
    return getattr(importlib.import_module(module), name)


def _forwarder(module: str, name: str) -> Any:
    if name[0].isupper():
        def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
            return _real(module, name)(*args, **kwargs)

        return type(name, (), {"__new__": __new__, "__module__": module, "__doc__": f"Loads {module} when used.",
                               _FORWARDS: (module, name)})

    def call(*args: Any, **kwargs: Any) -> Any:
        return _real(module, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    setattr(call, _FORWARDS, (module, name))
    return call


def _no_dns_over_quic() -> None:
    """dnspython imports aioquic for DNS-over-QUIC whenever it is installed (py-libp2p pulls it in); we resolve
    over UDP/TCP only, so we say so through its feature switch before ``dns.quic`` loads."""
    try:
        import dns._features as features
    except ImportError:
        return
    force = getattr(features, "force", None)
    if force is not None:
        force("doq", False)


def install() -> bool:
    """Put the stand-ins in place before py-libp2p is imported; True if it did."""
    if os.environ.get("P2P_FAST_LEAN_IMPORTS", "1") == "0" or "libp2p" in sys.modules:
        return False
    try:
        if version("libp2p") not in CHECKED_VERSIONS:
            return False
    except PackageNotFoundError:
        return False
    _no_dns_over_quic()
    for module, names in STAND_INS.items():
        stub = types.ModuleType(module, f"p2p_fast.stack.patches.lean_imports stand-in for {module}")
        setattr(stub, _MARK, True)
        for name in names:
            setattr(stub, name, _forwarder(module, name))
        sys.modules[module] = stub
    return True


apply = install


def revert() -> None:
    """Back to stock: the real modules in ``sys.modules`` and, in every loaded ``libp2p`` module, the real object
    wherever a forwarder was imported (idempotent; imports the real modules if a stand-in is still there)."""
    load_real()
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "libp2p" or mod_name.startswith("libp2p.")):
            continue
        for attr, value in list(vars(mod).items()):
            if not isinstance(value, (type, types.FunctionType)):
                continue
            target = vars(value).get(_FORWARDS)
            if target is not None:
                setattr(mod, attr, getattr(importlib.import_module(target[0]), target[1]))


def is_applied() -> bool:
    return any(is_stand_in(sys.modules.get(name)) for name in STAND_INS)
