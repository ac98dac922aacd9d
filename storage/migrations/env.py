"""Alembic environment: runs migrations on layerforge's own engine for the configured URL."""

from __future__ import annotations

from alembic import context

from layerforge.storage.engine import get_engine
from layerforge.storage.models import Base

config = context.config
url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
engine = get_engine(str(url))

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
