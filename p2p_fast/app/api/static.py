"""Pages served from files on this machine: the dashboard (``/ui``, files in ``p2p_fast/app/ui/``) and Swagger UI
(``/docs``, the Swagger UI 5 assets shipped by the ``fastapi-offline`` package; ``swagger-ui-bundle`` has Swagger UI 4,
which cannot read the OpenAPI 3.1 schema FastAPI writes). Nothing is loaded from a CDN: a pod without internet shows
both, and the Content-Security-Policy on every page forbids the browser to fetch anything from another origin.

``/ui`` and its files are open even with an API token (``security.token.OPEN_PREFIXES``): they are the same static
files for everybody and hold no data; the page asks for the token and sends it with every API call it makes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

log = logging.getLogger(__name__)
UI_DIR = Path(__file__).resolve().parent.parent / "ui"
UI_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
            ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
# 'self' only: any request to another host, even one a bug would make, is blocked by the browser.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# Swagger UI builds some styles inline and decodes its logo from a data: URI.
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")


def _ui_files() -> dict[str, Path]:
    return {p.name: p for p in UI_DIR.iterdir() if p.suffix in UI_TYPES} if UI_DIR.is_dir() else {}


def install_ui(app: Any) -> None:
    files = _ui_files()

    @app.get("/ui", include_in_schema=False)
    async def ui_index() -> Response:
        if "index.html" not in files:
            return JSONResponse({"error": "the dashboard files are not installed"}, status_code=404)
        return FileResponse(files["index.html"], media_type=UI_TYPES[".html"],
                            headers={"content-security-policy": CSP, "cache-control": "no-cache"})

    @app.get("/ui/{name}", include_in_schema=False)
    async def ui_file(name: str) -> Response:
        path = files.get(name)  # only the package's own files, by exact name: no path walking
        if path is None:
            if name == "":
                return RedirectResponse("/ui")
            return JSONResponse({"error": f"no dashboard file {name!r}"}, status_code=404)
        return FileResponse(path, media_type=UI_TYPES[path.suffix],
                            headers={"content-security-policy": CSP, "cache-control": "no-cache"})


def install_docs(app: Any) -> bool:
    """Swagger UI at ``/docs`` from the ``fastapi-offline`` package's files; False (no ``/docs``) when missing.
    Only its static files are used, not its ``FastAPIOffline`` class: the app and its routes stay ours."""
    try:
        import fastapi_offline  # type: ignore[import-untyped]
    except ImportError:
        log.info("fastapi-offline is not installed: no /docs page (the schema is at /openapi.json)")
        return False
    from fastapi.openapi.docs import get_swagger_ui_html

    root = Path(fastapi_offline.__file__).resolve().parent / "static"
    assets = {name: root / name for name in DOCS_ASSETS if (root / name).is_file()}
    if len(assets) != len(DOCS_ASSETS):
        log.warning("fastapi-offline lacks %s: no /docs page",
                    ", ".join(sorted(set(DOCS_ASSETS) - set(assets))))
        return False

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon.png",
                                   # No spec validation badge: it would ask an online validator.
                                   swagger_ui_parameters={"validatorUrl": None})
        page.headers["content-security-policy"] = DOCS_CSP
        return page

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        path = assets.get(name)
        if path is None:
            return JSONResponse({"error": f"no such asset {name!r}"}, status_code=404)
        return FileResponse(path, headers={"cache-control": "max-age=86400"})

    return True
