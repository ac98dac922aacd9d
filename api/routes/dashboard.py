"""The dashboard: static HTML/JS/CSS from ``api/static`` and Plotly from the installed package."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from layerforge.api.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


def plotly_path() -> Path | None:
    """``plotly.min.js`` shipped inside the installed plotly package (never a CDN)."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@router.get("/")
def index() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


@router.get("/static/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    path = plotly_path()
    if path is None:
        raise ApiError(404, "plotly is not installed; pip install plotly")
    return FileResponse(
        path, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
    )
