"""The HTTP listener without the parts of its packages a node does not use until a client asks for them.

hypercorn 0.18 imports its HTTP/2 protocol (h2, hpack, priority) and its WebSocket stream (wsproto) with its trio
server, although a node's clients (probes, scrapes, ``p2p-ctl``, the client library, the dashboard) speak HTTP/1.1 and
nothing of ours is a WebSocket: ``hypercorn.protocol`` (``H2Protocol``), ``hypercorn.protocol.h11`` (``WSStream``, made
on a WebSocket upgrade) and ``hypercorn.typing`` (``h2.events``, in annotations). That is about 0.02 s of CPU and
2 MiB on every start (bench/RESULTS.md, "Start-up CPU and RSS").

FastAPI 0.165 builds its OpenAPI models (about 40 pydantic classes, 83 modules with what they import: about 0.1 s and
5.6 MiB) when it is imported, for ``fastapi.params`` and ``fastapi.param_functions`` (``Example``, in annotations),
``fastapi.security`` (models made when a security scheme is constructed; we use none) and ``fastapi.openapi.utils``
(``OpenAPI``, made when the schema is built: ``/openapi.json``, ``/docs``). A node whose ``/v1`` API is used pays for
them on the first request, and keeps the memory, though only the schema needs them.

:func:`install` puts stand-ins for those modules in place through
:func:`p2p_fast.stack.patches.lean_imports.install_group` (the same mechanism as py-libp2p's: nothing copied, the
first use of any name loads the real modules and delegates). The entry point calls it with
``prepare_imports``, before anything imports hypercorn or FastAPI; only for the versions below (the import sites are
specific to them), not with ``P2P_FAST_LEAN_IMPORTS=0``. ``tests/node/test_start_imports.py`` checks a running node
never loads them for probes and API calls, and that HTTP/2, a WebSocket upgrade and ``/openapi.json`` still work.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from p2p_fast.stack.patches import lean_imports

HYPERCORN_VERSIONS = ("0.18.0",)
HYPERCORN = {
    "h2.events": (),  # ``import h2.events``: hypercorn.typing names it in annotations only
    "hypercorn.protocol.ws_stream": ("WSStream",),
    "hypercorn.protocol.h2": ("H2Protocol",),
}
FASTAPI_VERSIONS = ("0.165.0",)
FASTAPI = {
    "fastapi.openapi.models": ("Example", "OpenAPI", "SecurityBase", "HTTPBase", "HTTPBearer", "APIKey", "APIKeyIn",
                               "OpenIdConnect", "OAuth2", "OAuthFlows"),
    # fastapi.security's __init__ imports every scheme, and oauth2 makes an OAuthFlows model as a default argument;
    # fastapi.dependencies imports security.base (real: models in annotations only) and oauth2's SecurityScopes.
    "fastapi.security": (),
    "fastapi.security.oauth2": ("SecurityScopes",),
}
FASTAPI_PACKAGES = frozenset({"fastapi.security"})


_LAZY_CHECKS: set[Any] = set()  # the checks check_v1_models_lazily put in place


def check_v1_models_lazily() -> bool:
    """FastAPI 0.165 asks of every route parameter and every encoded object whether it is a pydantic v1 model, and
    imports ``pydantic.v1`` to ask (31 modules, and Cython's shadow module from ``pydantic.v1.version``: 2.3 MiB
    when the app is built). Nothing can be a v1 model before ``pydantic.v1`` is imported, so these checks answer
    False until then, without importing it, and stock's answer after. Called where the full app is built (FastAPI is
    imported by then); only for the versions above, not with ``P2P_FAST_LEAN_IMPORTS=0``. True if applied."""
    if os.environ.get("P2P_FAST_LEAN_IMPORTS", "1") == "0":
        return False
    try:
        if version("fastapi") not in FASTAPI_VERSIONS:
            return False
    except PackageNotFoundError:
        return False
    import fastapi._compat as compat
    import fastapi.encoders as encoders
    from fastapi._compat import shared

    stock_class, stock_instance = shared.is_pydantic_v1_model_class, shared.is_pydantic_v1_model_instance
    if stock_class in _LAZY_CHECKS:  # applied already
        return True

    def is_pydantic_v1_model_class(cls: Any) -> bool:
        return "pydantic.v1" in sys.modules and stock_class(cls)

    def is_pydantic_v1_model_instance(obj: Any) -> bool:
        return "pydantic.v1" in sys.modules and stock_instance(obj)

    _LAZY_CHECKS.update((is_pydantic_v1_model_class, is_pydantic_v1_model_instance))
    shared.is_pydantic_v1_model_class = is_pydantic_v1_model_class  # annotation_is_pydantic_v1 calls it by name
    shared.is_pydantic_v1_model_instance = is_pydantic_v1_model_instance
    compat.is_pydantic_v1_model_instance = is_pydantic_v1_model_instance
    encoders.is_pydantic_v1_model_instance = is_pydantic_v1_model_instance  # imported by name there
    return True


def install() -> dict[str, bool]:
    """Stand-ins for both groups where they apply; which were installed."""
    return {"hypercorn": lean_imports.install_group("hypercorn", "hypercorn", HYPERCORN_VERSIONS, HYPERCORN),
            "fastapi": lean_imports.install_group("fastapi", "fastapi", FASTAPI_VERSIONS, FASTAPI,
                                                   FASTAPI_PACKAGES)}
