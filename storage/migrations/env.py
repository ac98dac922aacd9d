"""Alembic environment: runs migrations on layerforge's own engine for the configured URL.

On SQLite the migrations run on a connection of their own with ``PRAGMA foreign_keys=OFF``:
a migration that rebuilds a table (batch mode) drops the old one, and with foreign keys on
that drop would cascade deletes into every child table. SQLite ignores the pragma inside a
transaction, so it is set on the raw connection before the migration transaction begins;
the engine is private to the migration and disposed afterwards, so no pooled connection of
the service ever runs with foreign keys off. Migrations that rebuild tables check
``PRAGMA foreign_key_check`` themselves before their transaction commits.
"""

from __future__ import annotations

from alembic import context

from layerforge.storage.engine import create_engine_for, get_engine
from layerforge.storage.models import Base

config = context.config
url = str(config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url"))
is_sqlite = url.startswith("sqlite")
engine = create_engine_for(url) if is_sqlite else get_engine(url)

try:
    with engine.connect() as connection:
        if is_sqlite:
            driver_connection = connection.connection.driver_connection
            assert driver_connection is not None
            driver_connection.execute("PRAGMA foreign_keys = OFF")
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=is_sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
finally:
    if is_sqlite:
        engine.dispose()
