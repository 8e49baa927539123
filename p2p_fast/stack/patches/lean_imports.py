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

Also left out until used (issue 12, start-up CPU and memory per node): multiaddr's DNS resolvers (dnspython with its
asyncio back-end: only ``/dns*`` addresses need them; the swarm makes a resolver it never uses, so ``DNSResolver()``
gives an instance that builds the real one on its first attribute access), the mDNS discovery (zeroconf and asyncio:
only ``network.enable_mdns`` starts it), and the RSA and secp256k1 key types (pycryptodome, whose cffi back-end
parses C declarations with pycparser at import, and coincurve: our identities are Ed25519, so only a peer presenting
such a key needs them), the private-network connection (pycryptodome's Salsa20: only a node with a PSK makes
one), SECIO (pycryptodome's AES, fastecdsa: only ``new_host`` without security options names it) and Bitswap's
package (22 modules; the DHT needs only its CID helpers). A class stand-in forwards its class attributes, such as ``RSAPublicKey.from_bytes``, and
``isinstance`` to the real class).

Other layers use the same mechanism for the packages they own through :func:`install_group`: a named group of
stand-ins with the versions of its distribution it was written for, loaded for real (the whole group) when one of
them is used (``p2p_fast.app.api.lean_http``: hypercorn's HTTP/2 and WebSocket protocols, FastAPI's OpenAPI models).
A group's class stand-ins load the real class on any class attribute access (``APIKeyIn.query`` must be the real
enum member), where py-libp2p's forward the call (py-libp2p reads ``from_bytes`` at import time).
"""

from __future__ import annotations

import importlib
import importlib.util
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
    "multiaddr.resolvers": ("DNSResolver",),
    "libp2p.discovery.mdns.mdns": ("MDNSDiscovery", "create_mdns_discovery"),
    "libp2p.crypto.rsa": ("RSAPublicKey", "RSAPrivateKey", "create_new_key_pair"),
    "libp2p.crypto.secp256k1": ("Secp256k1PublicKey", "Secp256k1PrivateKey", "create_new_key_pair"),
    "libp2p.security.pnet.psk_conn": ("PskConn",),
    "libp2p.security.secio.transport": (),  # ``import ... as secio``: attributes read at use (module __getattr__)
    "libp2p.bitswap": (),  # the DHT imports only ``libp2p.bitswap.cid``, which loads for real from the package path
}
# Classes whose instances are made at start-up but used (if ever) later: the instance is a stand-in too.
LAZY_INSTANCES = frozenset({"DNSResolver"})
# Stand-ins for packages keep the real package's path, so a direct import of one of its submodules still works.
PACKAGES = frozenset({"multiaddr.resolvers", "libp2p.bitswap"})
# Groups installed by other layers (install_group): group name -> its table (module -> names), like STAND_INS.
_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {}
_MARK = "__p2p_fast_stand_in__"
_FORWARDS = "__p2p_fast_forwards__"  # on a forwarder: (module, name) of the real object it stands for


def is_stand_in(module: Any) -> bool:
    return bool(getattr(module, _MARK, False))


def load_real(group: str | None = None) -> None:
    """Replace every stand-in of py-libp2p's table (or of ``group``) by the real module (idempotent)."""
    table = STAND_INS if group is None else _GROUPS.get(group, {})
    stand_ins = {name: sys.modules.pop(name) for name in table if is_stand_in(sys.modules.get(name))}
    for name in table:
        if name in stand_ins:
            importlib.import_module(name)


def _group_of(module: str) -> str | None:
    """The group whose table holds ``module``; None for py-libp2p's own table."""
    return next((group for group, table in _GROUPS.items() if module in table), None)


def _real(module: str, name: str) -> Any:
    if is_stand_in(sys.modules.get(module)):
        load_real(_group_of(module))
    return getattr(importlib.import_module(module), name)


class _StandInClass(type):
    """Metaclass of a class stand-in: class attributes (``from_bytes``...) call through to the real class, and
    ``isinstance``/``issubclass`` answer for it (no real instance exists before the real module is loaded)."""

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        module, name = cls.__module__, cls.__name__
        if _group_of(module) is not None:  # a group's class: the real attribute, whatever it is
            return getattr(_real(module, name), attr)

        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(_real(module, name), attr)(*args, **kwargs)

        call.__name__ = call.__qualname__ = attr
        return call

    def __instancecheck__(cls, obj: Any) -> bool:
        real = _loaded(cls.__module__, cls.__name__)
        return real is not None and isinstance(obj, real)

    def __subclasscheck__(cls, sub: type) -> bool:
        real = _loaded(cls.__module__, cls.__name__)
        return real is not None and issubclass(sub, real)


def _loaded(module: str, name: str) -> Any:
    """The real class if its module is loaded, else None."""
    mod = sys.modules.get(module)
    return None if mod is None or is_stand_in(mod) else getattr(mod, name, None)


class _LazyInstance:
    """An instance made before use: the real one is built, with the same arguments, on the first attribute access."""

    def __init__(self, module: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.__dict__["_lazy"] = (module, name, args, kwargs, [])

    def __getattr__(self, attr: str) -> Any:
        module, name, args, kwargs, made = self.__dict__["_lazy"]
        if not made:
            made.append(_real(module, name)(*args, **kwargs))
        return getattr(made[0], attr)


def _forwarder(module: str, name: str) -> Any:
    if name[0].isupper():
        lazy = name in LAZY_INSTANCES

        def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
            if lazy:
                return _LazyInstance(module, name, args, kwargs)
            return _real(module, name)(*args, **kwargs)

        return _StandInClass(name, (), {"__new__": __new__, "__module__": module,
                                        "__doc__": f"Loads {module} when used.", _FORWARDS: (module, name)})

    def call(*args: Any, **kwargs: Any) -> Any:
        return _real(module, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    setattr(call, _FORWARDS, (module, name))
    return call


def _module_getattr(module: str) -> Any:
    """A stand-in's module ``__getattr__``: any other name (read at use, or imported by code not listed here)
    loads the real modules and comes from the real one."""

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _real(module, attr)

    return __getattr__


def _stand_in(module: str, names: tuple[str, ...], package: bool = False) -> types.ModuleType:
    stub = types.ModuleType(module, f"p2p_fast.stack.patches.lean_imports stand-in for {module}")
    setattr(stub, _MARK, True)
    stub.__getattr__ = _module_getattr(module)  # type: ignore[attr-defined]
    for name in names:
        setattr(stub, name, _forwarder(module, name))
    if package or module in PACKAGES:
        top = importlib.util.find_spec(module.split(".")[0])  # a top-level spec: imports nothing
        if top is not None and top.submodule_search_locations:
            stub.__path__ = [os.path.join(top.submodule_search_locations[0], *module.split(".")[1:])]
    return stub


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
        sys.modules[module] = _stand_in(module, names)
    return True


apply = install


def install_group(group: str, distribution: str, versions: tuple[str, ...], table: dict[str, tuple[str, ...]],
                  packages: frozenset[str] = frozenset()) -> bool:
    """Stand-ins for ``table`` (module -> the names imported from it elsewhere), as :func:`install` does for
    py-libp2p, if ``distribution`` is installed at one of ``versions`` (the import sites the table names are specific
    to them), lean imports are on, and none of the modules is loaded yet. True if it did. Using any stand-in of the
    group loads all of the group's real modules. A stand-in for one of ``packages`` keeps the package's path, so its
    other submodules import for real."""
    if os.environ.get("P2P_FAST_LEAN_IMPORTS", "1") == "0" or any(m in sys.modules for m in table):
        return False
    try:
        if version(distribution) not in versions:
            return False
    except PackageNotFoundError:
        return False
    _GROUPS[group] = dict(table)
    for module, names in table.items():
        sys.modules[module] = _stand_in(module, names, module in packages)
    return True


def group_applied(group: str) -> bool:
    return any(is_stand_in(sys.modules.get(name)) for name in _GROUPS.get(group, {}))


def revert() -> None:
    """Back to stock: the real modules in ``sys.modules`` and, in every loaded ``libp2p`` module, the real object
    wherever a forwarder was imported (idempotent; imports the real modules if a stand-in is still there)."""
    load_real()
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or mod_name.split(".")[0] not in ("libp2p", "multiaddr"):
            continue
        for attr, value in list(vars(mod).items()):
            if not isinstance(value, (type, types.FunctionType)):
                continue
            target = vars(value).get(_FORWARDS)
            if target is not None:
                setattr(mod, attr, getattr(importlib.import_module(target[0]), target[1]))


def is_applied() -> bool:
    return any(is_stand_in(sys.modules.get(name)) for name in STAND_INS)
