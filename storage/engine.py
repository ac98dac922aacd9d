"""Engines and the one session context manager.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout;
write transactions start with ``BEGIN IMMEDIATE`` so that two processes writing the same file
queue on the lock instead of failing with "database is locked" when a deferred transaction
tries to upgrade. Read-only sessions keep SQLite's plain deferred ``BEGIN`` so readers never
wait for the writer. PostgreSQL connections are pinged before use so that a connection the
server terminated is replaced transparently.

A SQLite file is watched: the engine records the file's identity (device and inode) when it
first opens it, and before every write transaction (at most once a second) and before opening
every new connection it checks that the path still names that file. A file deleted or
replaced under a running process raises :class:`DatabaseFileChangedError` from then on,
instead of writes going into an unlinked inode (lost at exit) or into another database. A
file or folder that cannot be written fails engine creation with
:class:`DatabaseNotWritableError` naming the path.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from layerforge.storage.errors import (
    ConflictError,
    DatabaseFileChangedError,
    DatabaseNotWritableError,
    StorageError,
)

log = logging.getLogger(__name__)

DATABASE_URL_VARIABLE = "LAYERFORGE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///./layerforge.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections kept open per SQLite engine: one per worker thread of the API (AnyIO runs sync
# routes on up to 40). A connection beyond the pool is opened, configured (the PRAGMAs below)
# and closed again for every session, which under concurrent reads cost more than the reads.
SQLITE_POOL_SIZE = 40
# How often a write transaction re-checks that the SQLite path still names the opened file:
# a deleted or replaced file is noticed within this long (healthz checks on every call).
FILE_CHECK_INTERVAL_S = 1.0
# The start of the one log line that reports a deleted or replaced SQLite file.
DATABASE_FILE_CHANGED_LOG = "the database file changed under this process"
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


class DatabaseFileGuard:
    """Knows which file an engine's SQLite path named when the engine opened it, and tells
    whether the path still names that same file (same ``st_dev`` and ``st_ino``).

    Once the file is found deleted or replaced the guard stays failed: the open connections
    still point at the old inode, so no later state of the path can make writes safe again
    without a restart. The first failure is logged once, at ERROR, naming the path and why.
    """

    def __init__(self, path: str):
        self.path = path
        self._identity: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        self._failure: tuple[str, str] | None = None  # (reason, message)
        self._lock = threading.Lock()

    def opened(self) -> None:
        """Record the file's identity after a connection opened it (the first time), or check
        that a later connection opened the same file."""
        if self._identity is None:
            identity = self._stat()
            with self._lock:
                if self._identity is None and identity is not None:
                    self._identity = identity
                    return
        self.check(force=True)

    def check(self, *, force: bool = False) -> None:
        """Raise :class:`DatabaseFileChangedError` when the path no longer names the opened
        file. Without ``force`` the file system is asked at most every
        :data:`FILE_CHECK_INTERVAL_S`; a failure already found is raised every time."""
        if self._failure is None and self._identity is not None:
            now = time.monotonic()
            if force or now - self._checked_at >= FILE_CHECK_INTERVAL_S:
                self._checked_at = now
                self._compare()
        if self._failure is not None:
            reason, message = self._failure
            raise DatabaseFileChangedError(message, path=self.path, reason=reason)

    def _stat(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return status.st_dev, status.st_ino

    def _compare(self) -> None:
        assert self._identity is not None
        device, inode = self._identity
        opened = f"(opened as device {device}, inode {inode})"
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            reason, what = "deleted", "was deleted"
        except OSError as err:
            reason, what = "unreadable", f"can no longer be checked ({err.strerror})"
        else:
            if (status.st_dev, status.st_ino) == self._identity:
                return
            reason = "replaced"
            what = (
                f"was replaced by another file (now device {status.st_dev}, inode {status.st_ino})"
            )
        message = (
            f"the SQLite database file {self.path} {what} while this process had it open "
            f"{opened}; writes are refused so that nothing goes into a file that is no "
            "longer there. Put the database back and restart the service."
        )
        with self._lock:
            if self._failure is None:
                self._failure = (reason, message)
                log.error("%s: %s", DATABASE_FILE_CHANGED_LOG, message)


_guards: weakref.WeakKeyDictionary[Engine, DatabaseFileGuard] = weakref.WeakKeyDictionary()


def sqlite_file_path(parsed: URL) -> str | None:
    """The absolute path of a SQLite URL's file, or None for memory and ``file:`` URIs.

    Relative paths are taken from the current folder, as SQLite opens them."""
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def require_writable_sqlite(path: str) -> None:
    """Raise :class:`DatabaseNotWritableError` when SQLite could not write ``path``: the file
    exists and is read-only, or its folder is (WAL mode creates ``-wal`` and ``-shm`` beside
    the file). ``os.access`` answers for the real user and sees read-only mounts, so root on
    a read-only mount is refused while root on a ``chmod 444`` file (which it can write) is
    not."""
    folder = os.path.dirname(path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise DatabaseNotWritableError(
            f"the SQLite database file {path} is read-only (a read-only file or mount); "
            "layerforge must write its database: make it writable or use another file"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseNotWritableError(
            f"the folder {folder} of the SQLite database file {path} is not writable; SQLite "
            f"creates {os.path.basename(path)}-wal and -shm beside the file: make the folder "
            "writable or put the database elsewhere"
        )


def verify_database_file(engine: Engine) -> None:
    """Check now that a SQLite engine's path still names the file it opened (no-op for
    other engines); raises :class:`DatabaseFileChangedError` otherwise. For health checks."""
    guard = _guards.get(engine)
    if guard is not None:
        guard.check(force=True)


def _configure_sqlite(engine: Engine, guard: DatabaseFileGuard | None) -> None:
    if guard is not None:

        @event.listens_for(engine, "do_connect")
        def _before_connect(_dialect, _record, _cargs, _cparams):
            # a new connection to a deleted path would create an empty database there, and
            # to a replaced path would open the other database: refuse both
            guard.check(force=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()
        if guard is not None:
            guard.opened()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        readonly = connection.get_execution_options().get("layerforge_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def create_engine_for(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine for ``url`` with layerforge's settings for its backend.

    A SQLite file that cannot be written raises :class:`DatabaseNotWritableError` here, so
    that start-up fails naming the path."""
    parsed = validate_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file_path(parsed)
        if path is not None:
            require_writable_sqlite(path)
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_SIZE,
        )
        guard = DatabaseFileGuard(path) if path is not None else None
        if guard is not None:
            _guards[engine] = guard
        _configure_sqlite(engine, guard)
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
    dropped, SQLite was locked. Constraint violations, missing rows, bad SQL and a read-only
    SQLite file are not.

    A SQLite file deleted or replaced under the process (:class:`DatabaseFileChangedError`)
    counts as transient although only a restart cures it: a campaign runner then waits with
    back-off, writing nothing, instead of failing a campaign it cannot write to and being
    started again at once by the controller, over and over (docs/measurements.md)."""
    if isinstance(err, DatabaseFileChangedError):
        return True
    if isinstance(err, (ConflictError, DatabaseNotWritableError)):
        return False
    if type(err).__name__ == "NotFoundError":
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
    writer. A write session on a SQLite file first checks that the file is still the one
    the engine opened (:class:`DatabaseFileChangedError` otherwise).
    """
    if not readonly:
        guard = _guards.get(engine)
        if guard is not None:
            guard.check()
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


def ping(engine: Engine) -> None:
    """Open a connection and run ``SELECT 1``: raises whatever the database raises."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
