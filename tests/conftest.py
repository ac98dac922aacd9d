"""Shared fixtures: one Ray per test session, fresh databases on SQLite and PostgreSQL.

PostgreSQL tests use ``LAYERFORGE_TEST_POSTGRES_URL`` (default: the local server at
127.0.0.1:5432). Each test gets a database of its own, created before and dropped after.
Where the server cannot be reached the test is skipped with the reason; under ``CI=true``
an unreachable server is a failure, not a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")

POSTGRES_ADMIN_URL = os.environ.get(
    "LAYERFORGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_unreachable_reason() -> str | None:
    """Return why PostgreSQL cannot be used, or None when it can."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        return f"psycopg is not importable: {exc}"
    dsn = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {exc}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of a PostgreSQL server where test databases may be created."""
    reason = _postgres_unreachable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI must run the PostgreSQL suite)")
        pytest.skip(reason)
    return POSTGRES_ADMIN_URL


def create_postgres_database(admin_url: str) -> str:
    """Create a fresh, uniquely named database and return its SQLAlchemy URL."""
    import psycopg

    name = f"lf_test_{uuid.uuid4().hex[:12]}"
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(admin_url: str, url: str) -> None:
    """Drop a database made by :func:`create_postgres_database`, closing its sessions."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty database URL: once on a SQLite file, once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'layerforge.db'}"
        return
    admin = request.getfixturevalue("postgres_admin_url")
    url = create_postgres_database(admin)
    try:
        yield url
    finally:
        drop_postgres_database(admin, url)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (dashboard and usage stats off)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            ignore_reinit_error=True,
        )
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the longest tests first: ``starts_first`` ones, then ``slow`` ones, then the rest
    (a stable sort, so files keep their order within each group).

    The xdist workers take the collected tests in order and steal from each other's tails,
    so a several-minute test collected late would run alone at the end. Started first, its
    long waits (the serve test keeps a service up for 100 s) overlap the rest of the suite.
    """

    def group(item: pytest.Item) -> int:
        if item.get_closest_marker("starts_first"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=group)
