"""Engines and the one session context manager.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout;
write transactions start with ``BEGIN IMMEDIATE`` so that two processes writing the same file
queue on the lock instead of failing with "database is locked" when a deferred transaction
tries to upgrade. Read-only sessions keep SQLite's plain deferred ``BEGIN`` so readers never
wait for the writer. PostgreSQL connections are pinged before use so that a connection the
server terminated is replaced transparently.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from layerforge.storage.errors import ConflictError, StorageError

DATABASE_URL_VARIABLE = "LAYERFORGE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///./layerforge.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections kept open per SQLite engine: one per worker thread of the API (AnyIO runs sync
# routes on up to 40). A connection beyond the pool is opened, configured (the PRAGMAs below)
# and closed again for every session, which under concurrent reads cost more than the reads.
SQLITE_POOL_SIZE = 40
_SUPPORTED = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def validate_database_url(url: str, *, variable: str = DATABASE_URL_VARIABLE) -> URL:
    """Parse and check a database URL without touching the database.

    Raises :class:`StorageError` whose message names ``variable`` when the URL is malformed,
    names an unsupported backend or driver, or points at a SQLite file in a folder that does
    not exist. Nothing is created on the way.
    """
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError) as err:
        raise StorageError(f"{variable} is not a valid database URL ({url!r}): {err}") from None
    backend = parsed.get_backend_name()
    if backend not in _SUPPORTED:
        raise StorageError(
            f"{variable}={url!r} names backend {backend!r}; layerforge supports "
            "sqlite:///PATH and postgresql+psycopg://USER@HOST:PORT/DB"
        )
    driver = parsed.get_driver_name()
    if backend == "postgresql" and driver != "psycopg":
        raise StorageError(
            f"{variable}={url!r} uses driver {driver!r}; use postgresql+psycopg://..."
        )
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            folder = Path(database).expanduser().resolve().parent
            if not folder.is_dir():
                raise StorageError(
                    f"{variable}={url!r}: the folder {str(folder)!r} for the SQLite file "
                    "does not exist"
                )
    if backend == "postgresql" and not parsed.database:
        raise StorageError(f"{variable}={url!r} names no database (…/DBNAME at the end)")
    return parsed


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        readonly = connection.get_execution_options().get("layerforge_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def create_engine_for(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine for ``url`` with layerforge's settings for its backend."""
    parsed = validate_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_SIZE,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        parsed, pool_pre_ping=True, pool_size=pool_size, max_overflow=20, pool_recycle=1800
    )


def get_engine(url: str) -> Engine:
    """Return this process's engine for ``url``, creating it on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_engine_for(url)
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, and child processes after a fork)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


_factories: dict[int, sessionmaker[Session]] = {}


def _factory(engine: Engine, readonly: bool) -> sessionmaker[Session]:
    key = id(engine) * 2 + int(readonly)
    factory = _factories.get(key)
    if factory is None:
        bind = engine.execution_options(layerforge_readonly=True) if readonly else engine
        factory = _factories[key] = sessionmaker(bind=bind, expire_on_commit=False)
    return factory


def _is_driver_error(err: BaseException) -> bool:
    if isinstance(err, (exc.SQLAlchemyError, sqlite3.Error)):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(err, psycopg.Error)


def is_transient(err: BaseException) -> bool:
    """True when ``err`` (a :class:`StorageError` or a driver error) is a lost or busy
    connection that a retry may cure: the server terminated or restarted, the network
    dropped, SQLite was locked. Constraint violations, missing rows and bad SQL are not."""
    if isinstance(err, (ConflictError,)) or type(err).__name__ == "NotFoundError":
        return False
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(
            current,
            (
                exc.OperationalError,
                exc.InterfaceError,
                exc.DisconnectionError,
                sqlite3.OperationalError,
            ),
        ):
            return True
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is a dependency
            psycopg = None  # type: ignore[assignment]  # optional module, None when absent
        if psycopg is not None and isinstance(
            current, (psycopg.OperationalError, psycopg.InterfaceError)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def session_scope(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on any error.

    Driver and SQLAlchemy errors leave as :class:`StorageError` (uniqueness violations as
    :class:`ConflictError`) with the original chained; other exceptions pass unchanged.
    ``readonly=True`` is a promise not to write: on SQLite it lets readers run beside the
    writer.
    """
    session = _factory(engine, readonly)()
    try:
        with wrap_driver_errors():
            try:
                yield session
                session.commit()
            except BaseException:
                try:
                    session.rollback()
                except Exception:  # noqa: BLE001 - a dead connection cannot roll back; close() drops it
                    pass
                raise
    finally:
        session.close()


@contextmanager
def wrap_driver_errors() -> Iterator[None]:
    """Let driver and SQLAlchemy errors leave as :class:`StorageError` (uniqueness violations
    as :class:`ConflictError`) with the original chained; other exceptions pass unchanged."""
    try:
        yield
    except BaseException as err:
        if isinstance(err, exc.IntegrityError):
            raise ConflictError(f"the write conflicts with stored data: {err.orig}") from err
        if _is_driver_error(err) and not isinstance(err, StorageError):
            raise StorageError(f"database error: {err}") from err
        raise
