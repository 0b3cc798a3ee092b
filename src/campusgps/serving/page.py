"""The web page (``/``), the API docs (``/docs``) and their static files, all served locally.

Leaflet and Swagger UI are vendored under ``static/vendor``; the page's Content-Security-Policy allows images
from the optional ``--tiles`` host and nothing else from outside.
"""
from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


def page_headers(tiles_url: str | None) -> dict:
    """Security headers of the page; ``tiles_url``'s host (and its a/b/c subdomains) may serve images."""
    csp_img = "'self' data: blob:"
    if tiles_url:
        m = re.match(r"^(https?://[^/{}]+)", tiles_url.replace("{s}.", ""))
        if m:
            host = m.group(1)
            csp_img += f" {host}"
            if "{s}" in tiles_url:  # subdomains a/b/c
                csp_img += " " + re.sub(r"^(https?://)", r"\1*.", host)
    return {
        "Content-Security-Policy": f"default-src 'self'; img-src {csp_img}; style-src 'self' 'unsafe-inline'; "
                                   "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }


@router.get("/")
def index(request: Request):
    headers = page_headers(request.app.state.server.settings.tiles_url)
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=headers)


@router.get("/docs")
def docs(request: Request):
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title="campusgps API",
                               swagger_js_url="static/vendor/swagger-ui/swagger-ui-bundle.js",
                               swagger_css_url="static/vendor/swagger-ui/swagger-ui.css",
                               swagger_favicon_url="static/vendor/swagger-ui/favicon-32x32.png")


@router.get("/favicon.ico")
def favicon():
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


def add_page(app) -> None:
    """Add the page, the docs and ``/static`` to ``app``."""
    from fastapi.staticfiles import StaticFiles

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
