"""The hot-path read of a campaign's data version: one driver round trip, no ORM.

Every cached API answer checks the version of the data under it before it is served, so this
read runs once per request. A session's transaction events and ORM result machinery would
cost many times the query itself (docs/measurements.md), so it goes straight through the
pooled DBAPI connection. It returns the values the ORM reads from the campaign row
(``tests/storage`` checks both on every backend).

On SQLite the connection is in autocommit mode (layerforge emits its own ``BEGIN``), so the
``SELECT`` is its own read transaction; on PostgreSQL the pool rolls the implicit
transaction back when the connection is returned.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from sqlalchemy import Engine

from layerforge.storage.engine import wrap_driver_errors
from layerforge.storage.models import Campaign, Candidate

VersionScope = Literal["campaign", "candidate"]


class DataVersion(NamedTuple):
    """One state of the data stored under a campaign; equal versions mean equal data.

    ``created_at`` tells a campaign from a later one that reused a deleted campaign's id.
    """

    campaign_id: int
    created_at: dt.datetime
    counter: int


_CAMPAIGN, _CANDIDATE = Campaign.__tablename__, Candidate.__tablename__
_SQL: dict[str, str] = {
    "campaign": f"SELECT id, created_at, data_version FROM {_CAMPAIGN} WHERE id = {{p}}",
    "candidate": (
        f"SELECT c.id, c.created_at, c.data_version FROM {_CAMPAIGN} c "
        f"JOIN {_CANDIDATE} d ON d.campaign_id = c.id WHERE d.id = {{p}}"
    ),
}
_prepared: dict[tuple[int, str], tuple[str, Callable[[Any], Any]]] = {}


def _prepare(engine: Engine, scope: str) -> tuple[str, Callable[[Any], Any]]:
    """The statement in the driver's parameter style, and the converter that turns the raw
    ``created_at`` into what the ORM returns (SQLite stores it as text)."""
    key = (id(engine.dialect), scope)
    prepared = _prepared.get(key)
    if prepared is None:
        if scope not in _SQL:
            raise ValueError(f"version scope {scope!r} is not one of {sorted(_SQL)}")
        marker = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        column_type = Campaign.__table__.c.created_at.type
        convert = column_type.dialect_impl(engine.dialect).result_processor(engine.dialect, None)
        prepared = _prepared[key] = (_SQL[scope].format(p=marker), convert or (lambda v: v))
    return prepared


def read_data_version(engine: Engine, scope: VersionScope, row_id: int) -> DataVersion | None:
    """The data version of the campaign ``row_id`` (scope ``"campaign"``) or of the campaign
    candidate ``row_id`` belongs to (scope ``"candidate"``); None when there is no such row.

    Driver errors leave as :class:`storage.StorageError`, as from :func:`storage.session_scope`.
    """
    sql, convert = _prepare(engine, scope)
    with wrap_driver_errors():
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, (row_id,))
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            connection.close()
    return _version(row, convert)


def _version(row: Any, convert: Callable[[Any], Any]) -> DataVersion | None:
    return None if row is None else DataVersion(row[0], convert(row[1]), row[2])


class VersionReader:
    """:func:`read_data_version` for one caller that reads very often (the API's cache check,
    hundreds of times a second).

    On a SQLite file it keeps its own connection, opened on first use and confined to the
    thread that opened it: no pool checkout, no reset on return (about half the cost of the
    read). Other databases, and calls from any other thread, go through the engine's pool.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        database = engine.url.database or ""
        self._path = (
            database
            if engine.dialect.name == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            else None
        )
        self._connection: sqlite3.Connection | None = None
        self._owner: int | None = None

    def read(self, scope: VersionScope, row_id: int) -> DataVersion | None:
        """The data version at ``scope`` (see :func:`read_data_version`)."""
        if self._path is None or self._owner not in (None, threading.get_ident()):
            return read_data_version(self.engine, scope, row_id)
        sql, convert = _prepare(self.engine, scope)
        with wrap_driver_errors():
            if self._connection is None:
                from layerforge.storage.engine import SQLITE_BUSY_TIMEOUT_MS

                self._connection = sqlite3.connect(
                    self._path, isolation_level=None, check_same_thread=False
                )
                self._connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                self._owner = threading.get_ident()
            row = self._connection.execute(sql, (row_id,)).fetchone()
        return _version(row, convert)

    def close(self) -> None:
        """Close the connection this reader opened (a later read opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection, self._owner = None, None
