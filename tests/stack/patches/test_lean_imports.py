"""``p2p_fast.stack.patches.lean_imports``: prepared by the entry point, a node's imports leave out QUIC, WebSocket and
AutoTLS, and using any of them still gets the real py-libp2p modules; stock (switched off, or just imported without
the entry point's call) imports them all. Each case runs in a fresh interpreter (the stand-ins act at first
import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("libp2p.bitswap.client", "aioquic", "requests", "httpx", "rich", "click", "trio_websocket", "wsproto", "Crypto",
         "pycparser", "zeroconf", "coincurve", "fastecdsa", "dns.resolver", "dns.asyncresolver")

PROBE = """
import json, sys
from p2p_fast.stack.patches import prepare_imports
prepare_imports()  # what p2p_fast.app.cli.main does first
import p2p_fast.app.node, p2p_fast.app.cli
heavy = sorted(({m.split('.')[0] for m in sys.modules} | set(sys.modules)) & set(%r))
from libp2p.transport.quic.utils import is_quic_multiaddr
from libp2p.transport.quic.transport import QUICTransport
import multiaddr
quic = is_quic_multiaddr(multiaddr.Multiaddr("/ip4/127.0.0.1/udp/4001/quic-v1"))
tcp = is_quic_multiaddr(multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001"))
from libp2p.crypto.ed25519 import create_new_key_pair
t = QUICTransport(create_new_key_pair().private_key)
# RSA and secp256k1 keys: deserialized by the real classes, and isinstance through the names py-libp2p imported early.
from libp2p.crypto.rsa import create_new_key_pair as rsa_pair
from libp2p.crypto.serialization import deserialize_public_key
import libp2p.peer.envelope as envelope
rsa_pub = deserialize_public_key(rsa_pair(1024).public_key.serialize())
rsa = [type(rsa_pub).__module__ + "." + type(rsa_pub).__name__, isinstance(rsa_pub, envelope.RSAPublicKey)]
from libp2p.crypto.secp256k1 import create_new_key_pair as secp_pair
secp_pub = deserialize_public_key(secp_pair().public_key.serialize())
secp = [type(secp_pub).__name__, isinstance(secp_pub, envelope.Secp256k1PublicKey)]
# The swarm's resolver (made at start-up): the real one behind it on first use.
from libp2p.network.swarm import DNSResolver
resolver = DNSResolver()
resolver_type = type(resolver.resolve.__self__).__module__
import libp2p.security.secio.transport as secio
secio_id = str(secio.ID)
from libp2p.bitswap import BitswapClient  # the package stand-in gives way to the real one
bitswap = BitswapClient.__module__
from libp2p.discovery.mdns.mdns import MDNSDiscovery
mdns = MDNSDiscovery.__module__ + "." + getattr(MDNSDiscovery, "__qualname__", "?")
from p2p_fast.stack.patches.lean_imports import STAND_INS, is_stand_in
print(json.dumps({"heavy": heavy, "quic": quic, "tcp": tcp, "type": type(t).__module__ + "." + type(t).__name__,
                  "rsa": rsa, "secp": secp, "resolver": resolver_type, "secio": secio_id, "bitswap": bitswap,
                  "stand_ins_left": [m for m in STAND_INS if is_stand_in(sys.modules.get(m))]}))
""" % (HEAVY,)


def _probe(lean: str) -> dict:
    env = {**os.environ, "P2P_FAST_LEAN_IMPORTS": lean}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_node_imports_none_of_the_unused_transports_and_they_still_work_when_used():
    doc = _probe("1")
    assert doc["heavy"] == []
    # First use: the real modules, stock behaviour.
    assert doc["quic"] is True and doc["tcp"] is False
    assert doc["type"] == "libp2p.transport.quic.transport.QUICTransport"
    assert doc["rsa"] == ["libp2p.crypto.rsa.RSAPublicKey", True]
    assert doc["secp"] == ["Secp256k1PublicKey", True]
    assert doc["resolver"] == "multiaddr.resolvers.dns"
    assert doc["secio"] == "/secio/1.0.0"
    assert doc["bitswap"] == "libp2p.bitswap.client"
    assert doc["stand_ins_left"] == []


def test_switched_off_everything_is_imported_as_stock():
    doc = _probe("0")
    assert {"aioquic", "requests", "Crypto", "zeroconf", "dns.asyncresolver"} <= set(doc["heavy"])
    assert doc["rsa"] == ["libp2p.crypto.rsa.RSAPublicKey", True] and doc["resolver"] == "multiaddr.resolvers.dns"
    assert doc["quic"] is True and doc["type"] == "libp2p.transport.quic.transport.QUICTransport"


def test_another_py_libp2p_version_gets_no_stand_ins():
    code = ("import importlib.metadata as md, sys, json\n"
            "stock = md.version\nmd.version = lambda name: '9.9.9' if name == 'libp2p' else stock(name)\n"
            "from p2p_fast.stack.patches import prepare_imports\n"
            "assert prepare_imports() is False\n"
            "import p2p_fast.app.node\n"
            "from p2p_fast.stack.patches.lean_imports import STAND_INS, is_stand_in\n"
            "print(json.dumps([m for m in STAND_INS if is_stand_in(sys.modules.get(m))]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_package_applies_nothing():
    doc = _run("import json, sys\n"
               "import p2p_fast, p2p_fast.app.node, p2p_fast.app.cli\n"
               "from p2p_fast.stack.patches.lean_imports import STAND_INS, is_stand_in\n"
               "print(json.dumps({'stand_ins': [m for m in STAND_INS if is_stand_in(sys.modules.get(m))], "
               "'aioquic': 'aioquic' in sys.modules}))\n")
    assert doc == {"stand_ins": [], "aioquic": True}  # stock imports: nothing changed by importing p2p_fast


def test_the_p2p_node_entry_point_prepares_lean_imports():
    doc = _run("import json, sys\n"
               "from p2p_fast.app import cli\n"
               "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
               "from p2p_fast.stack.patches import lean_imports\n"
               "print(json.dumps({'applied': lean_imports.is_applied()}))\n")
    assert doc == {"applied": True}


def test_revert_gives_every_name_its_real_object_back():
    doc = _run("import json, sys\n"
               "from p2p_fast.stack.patches import lean_imports, prepare_imports\n"
               "prepare_imports()\n"
               "import libp2p\n"
               "forwarder_before = '__p2p_fast_forwards__' in vars(libp2p.QUICTransport)\n"
               "lean_imports.revert()\n"
               "from libp2p.transport.quic.transport import QUICTransport\n"
               "from libp2p.transport.quic.utils import is_quic_multiaddr\n"
               "print(json.dumps({'stand_ins_left': lean_imports.is_applied(),\n"
               "                  'same_class': libp2p.QUICTransport is QUICTransport,\n"
               "                  'same_function': libp2p.is_quic_multiaddr is is_quic_multiaddr,\n"
               "                  'forwarder_before': forwarder_before}))\n")
    assert doc["forwarder_before"] is True  # applied: libp2p/__init__ took the stand-in's forwarder
    assert doc["stand_ins_left"] is False
    assert doc["same_class"] is True and doc["same_function"] is True


def test_a_group_of_other_packages_stand_ins_gives_the_real_objects_when_used():
    """``install_group`` (here ``p2p_fast.app.api.lean_http``'s hypercorn and FastAPI groups): the servers import
    without the modules, and every name they took works as the real one (a class attribute is the real attribute,
    ``isinstance``/``issubclass`` answer for the real class)."""
    doc = _run("import json, sys\n"
               "from p2p_fast.stack.patches import prepare_imports, lean_imports\n"
               "prepare_imports()\n"
               "from p2p_fast.app.api import lean_http\n"
               "installed = lean_http.install()\n"
               "import hypercorn.trio, fastapi, fastapi.dependencies.utils as deps, hypercorn.protocol.h11 as h11\n"
               "before = {g: lean_imports.group_applied(g) for g in ('hypercorn', 'fastapi')}\n"
               "heavy = sorted(m for m in ('h2.connection', 'wsproto', 'fastapi.security.api_key')\n"
               "               if m in sys.modules)\n"
               "import fastapi.openapi.models as models\n"
               "member = models.APIKeyIn.query\n"  # a class attribute of a stand-in: the real enum member
               "after_attr = lean_imports.group_applied('fastapi')\n"
               "from fastapi.security import APIKeyQuery\n"
               "model = APIKeyQuery(name='k').model\n"
               "scopes = deps.SecurityScopes(scopes=['a', 'b'])\n"
               "from fastapi.security.oauth2 import SecurityScopes\n"
               "handle = h11.WSStream.handle\n"  # a class attribute: loads the group, gives the real method
               "from hypercorn.protocol.ws_stream import WSStream\n"
               "print(json.dumps({'installed': installed, 'before': before, 'heavy': heavy,\n"
               "                  'member': [type(member).__module__, member.value], 'after_attr': after_attr,\n"
               "                  'model': [type(model).__name__,\n"
               "                            model.model_dump(mode='json', by_alias=True)['in']],\n"
               "                  'scopes': [type(scopes) is SecurityScopes, scopes.scope_str,\n"
               "                             issubclass(SecurityScopes, deps.SecurityScopes)],\n"
               "                  'ws': [h11.WSStream is WSStream, WSStream.__module__, handle is WSStream.handle,\n"
               "                         isinstance(object.__new__(WSStream), h11.WSStream)],\n"
               "                  'left': {g: lean_imports.group_applied(g) for g in ('hypercorn', 'fastapi')}}))\n")
    assert doc["installed"] == {"hypercorn": True, "fastapi": True}
    assert doc["before"] == {"hypercorn": True, "fastapi": True} and doc["heavy"] == []
    assert doc["member"] == ["fastapi.openapi.models", "query"] and doc["after_attr"] is False
    assert doc["model"] == ["APIKey", "query"]
    assert doc["scopes"] == [True, "a b", True]
    # hypercorn.protocol.h11 still holds the forwarder; it answers for the real class.
    assert doc["ws"] == [False, "hypercorn.protocol.ws_stream", True, True]
    assert doc["left"] == {"hypercorn": False, "fastapi": False}


def test_a_group_is_not_installed_for_another_version_or_when_switched_off():
    code = ("import json, os\n"
            "from p2p_fast.stack.patches import lean_imports\n"
            "table = {'hypercorn.protocol.h2': ('H2Protocol',)}\n"
            "other = lean_imports.install_group('g', 'hypercorn', ('0.0.1',), table)\n"
            "os.environ['P2P_FAST_LEAN_IMPORTS'] = '0'\n"
            "off = lean_imports.install_group('g', 'hypercorn', ('0.18.0',), table)\n"
            "import hypercorn.protocol.h2 as h2\n"
            "print(json.dumps([other, off, lean_imports.is_stand_in(h2)]))\n")
    assert _run(code) == [False, False, False]
