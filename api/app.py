"""The FastAPI application: routes under /api/v1, the dashboard at /, /healthz and /metrics."""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib.metadata import version as package_version

from fastapi import FastAPI
from sqlalchemy import text

from api.settings import Settings, get_settings
from storage import current_revision, get_engine, head_revision, upgrade_database


def layerforge_version() -> str:
    """The installed version of layerforge."""
    try:
        return package_version("layerforge")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0+unknown"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; on start it upgrades the database to the newest schema."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        upgrade_database(settings.database_url)
        yield

    app = FastAPI(title="layerforge", version=layerforge_version(), lifespan=lifespan)
    app.state.settings = settings

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        """Liveness and database reachability, with the schema revision and version."""
        engine = get_engine(settings.database_url)
        database: dict = {"backend": engine.dialect.name}
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            database["ok"] = True
            database["revision"] = current_revision(settings.database_url)
            database["head"] = head_revision()
        except Exception as err:  # noqa: BLE001 - reported, not raised
            database["ok"] = False
            database["error"] = str(err).splitlines()[0]
        return {"status": "ok" if database["ok"] else "degraded",
                "version": layerforge_version(), "database": database}

    return app
