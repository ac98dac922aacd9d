"""The dashboard and the API docs, with every asset served by this app (never a CDN).

The dashboard is static HTML/JS/CSS from ``api/static``; Plotly comes from the installed
``plotly`` package and KaTeX from ``api/static/vendor/katex`` (the npm package's files, with
their licence). ``/docs`` (Swagger UI) and ``/redoc`` use the assets that the
``fastapi-offline`` package ships, so both work on a machine without internet access.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from layerforge.api.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
VENDOR = "/static/vendor"

router = APIRouter(include_in_schema=False)

_LONG_CACHE = {"Cache-Control": "public, max-age=86400"}


def plotly_path() -> Path | None:
    """``plotly.min.js`` shipped inside the installed plotly package (never a CDN)."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def docs_asset_path(name: str) -> Path | None:
    """One of Swagger UI's or ReDoc's files as the ``fastapi-offline`` package ships them."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    path = Path(fastapi_offline.__file__).resolve().parent / "static" / name
    return path if path.is_file() else None


#: The docs assets: URL name -> (file in fastapi-offline, media type).
DOCS_ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui.css", "text/css"),
    "redoc.standalone.js": ("redoc.standalone.js", "text/javascript"),
    "favicon.png": ("favicon.png", "image/png"),
}


@router.get("/")
def index() -> FileResponse:
    """The dashboard's single page (its views are hash routes, see ``static/app.js``)."""
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


@router.get(VENDOR + "/plotly.min.js")
def plotly_js() -> FileResponse:
    """Plotly from the installed package."""
    path = plotly_path()
    if path is None:
        raise ApiError(404, "plotly is not installed; pip install plotly")
    return FileResponse(path, media_type="text/javascript", headers=_LONG_CACHE)


#: ReDoc's bundle loads its "API docs by Redocly" badge from a CDN; served here, the bundle
#: names an inline blank image instead, so the page makes no request off this server.
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
BLANK_SVG = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


@functools.lru_cache(maxsize=1)
def _redoc_bundle(path: Path) -> bytes:
    return path.read_bytes().replace(REDOC_CDN_LOGO, BLANK_SVG)


@router.get(VENDOR + "/docs/{name}", response_model=None)
def docs_asset(name: str) -> FileResponse | Response:
    """Swagger UI's and ReDoc's scripts and stylesheet, from the installed fastapi-offline."""
    if name not in DOCS_ASSETS:
        raise ApiError(404, f"no docs asset {name!r}; one of: {', '.join(DOCS_ASSETS)}")
    filename, media_type = DOCS_ASSETS[name]
    path = docs_asset_path(filename)
    if path is None:
        raise ApiError(404, "fastapi-offline is not installed; pip install fastapi-offline")
    if name == "redoc.standalone.js":
        return Response(_redoc_bundle(path), media_type=media_type, headers=_LONG_CACHE)
    return FileResponse(path, media_type=media_type, headers=_LONG_CACHE)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over this app's OpenAPI schema, with local assets."""
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{VENDOR}/docs/swagger-ui-bundle.js",
        swagger_css_url=f"{VENDOR}/docs/swagger-ui.css",
        swagger_favicon_url=f"{VENDOR}/docs/favicon.png",
        # no call to the public validator service for the badge
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over this app's OpenAPI schema, with local assets and no web fonts."""
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API reference",
        redoc_js_url=f"{VENDOR}/docs/redoc.standalone.js",
        redoc_favicon_url=f"{VENDOR}/docs/favicon.png",
        with_google_fonts=False,
    )
