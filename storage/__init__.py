"""Persistent state of layerforge: SQLAlchemy models, the repository contract, migrations.

Use it as::

    from layerforge.storage import get_engine, session_scope, upgrade_database, repository as repo

    upgrade_database(url)
    with session_scope(get_engine(url)) as session:
        campaign = repo.create_campaign(session, name=..., ...)

The contract every backend honours is written in :mod:`storage.repository`'s docstring.
"""

from layerforge.storage import repository
from layerforge.storage.encoding import decode_float, encode_float, json_safe
from layerforge.storage.engine import (
    DATABASE_URL_VARIABLE,
    DEFAULT_DATABASE_URL,
    create_engine_for,
    dispose_engines,
    get_engine,
    is_transient,
    session_scope,
    validate_database_url,
)
from layerforge.storage.errors import ConflictError, NotFoundError, StorageError
from layerforge.storage.migrate import (
    current_revision,
    downgrade_database,
    head_revision,
    upgrade_database,
)
from layerforge.storage.versions import read_data_version

__all__ = [
    "DATABASE_URL_VARIABLE",
    "DEFAULT_DATABASE_URL",
    "ConflictError",
    "NotFoundError",
    "StorageError",
    "create_engine_for",
    "current_revision",
    "decode_float",
    "dispose_engines",
    "downgrade_database",
    "encode_float",
    "get_engine",
    "head_revision",
    "is_transient",
    "json_safe",
    "repository",
    "read_data_version",
    "session_scope",
    "upgrade_database",
    "validate_database_url",
]
