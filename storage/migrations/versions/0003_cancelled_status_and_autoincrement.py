"""status 'cancelled' for candidates and evaluations; AUTOINCREMENT ids on SQLite

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

A cancelled campaign closes its in-flight work as ``cancelled`` (not ``failed``), so the
candidate and evaluation CHECK constraints gain that status. On SQLite every table with an
integer primary key becomes ``INTEGER PRIMARY KEY AUTOINCREMENT`` so that an id is never
handed out again after its row was deleted (a deleted campaign's id reused by the next one
let a late writer of the old campaign write into the new one).

SQLite alters neither a CHECK nor AUTOINCREMENT in place, so those tables are rebuilt
(copied into a new table, the old one dropped, the new one renamed). The migration
environment (``env.py``) runs SQLite migrations with ``PRAGMA foreign_keys=OFF``: dropping a
parent table with foreign keys on would cascade deletes into its children. After the
rebuild ``PRAGMA foreign_key_check`` must report nothing, or the migration fails and its
transaction rolls back. PostgreSQL ids are sequences already; only the CHECKs change there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Parents before children, so that a rebuilt parent exists when its child is rebuilt.
INTEGER_KEYED_TABLES = (
    "campaign",
    "candidate",
    "evaluation",
    "rejection",
    "hypervolume_point",
    "event",
)

OLD_CANDIDATE_STATUSES = ("proposed", "running", "completed", "rejected", "failed", "duplicate")
OLD_EVALUATION_STATUSES = ("queued", "running", "completed", "failed", "timeout")
NEW_CANDIDATE_STATUSES = (*OLD_CANDIDATE_STATUSES, "cancelled")
NEW_EVALUATION_STATUSES = (*OLD_EVALUATION_STATUSES, "cancelled")

CHECK_NAMES = {"candidate": "ck_candidate_status", "evaluation": "ck_evaluation_status"}
OLD_STATUSES = {"candidate": OLD_CANDIDATE_STATUSES, "evaluation": OLD_EVALUATION_STATUSES}
NEW_STATUSES = {"candidate": NEW_CANDIDATE_STATUSES, "evaluation": NEW_EVALUATION_STATUSES}


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _rebuild_sqlite(*, autoincrement: bool, statuses: dict[str, tuple[str, ...]]) -> None:
    """Recreate every integer-keyed table with the wanted AUTOINCREMENT and status CHECKs."""
    bind = op.get_bind()
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0003 must run with PRAGMA foreign_keys=OFF on SQLite (env.py sets it): "
            "rebuilding a parent table with foreign keys on would delete its children"
        )
    for table in INTEGER_KEYED_TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ) as batch_op:
            if table in CHECK_NAMES:
                batch_op.drop_constraint(CHECK_NAMES[table], type_="check")
                batch_op.create_check_constraint(CHECK_NAMES[table], _in("status", statuses[table]))
    problems = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise RuntimeError(f"migration 0003 would break foreign keys: {problems[:20]}")


def _seed_sqlite_sequence() -> None:
    """Start each AUTOINCREMENT counter at least at the table's largest id.

    The copy into the rebuilt table already records the largest id it inserted; this makes
    it explicit (and never lowers a counter). An id deleted from the top of a table before
    this migration left no trace in SQLite, so it cannot be protected.
    """
    bind = op.get_bind()
    for table in INTEGER_KEYED_TABLES:
        largest = bind.exec_driver_sql(f"SELECT MAX(id) FROM {table}").scalar()
        if largest is None:
            continue
        current = bind.exec_driver_sql(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
        ).scalar()
        if current is None:
            bind.exec_driver_sql(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, largest)
            )
        elif current < largest:
            bind.exec_driver_sql(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (largest, table)
            )


def _replace_postgres_checks(statuses: dict[str, tuple[str, ...]]) -> None:
    for table, name in CHECK_NAMES.items():
        op.drop_constraint(name, table, type_="check")
        op.create_check_constraint(name, table, _in("status", statuses[table]))


def upgrade() -> None:
    """Apply this revision."""
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(autoincrement=True, statuses=NEW_STATUSES)
        _seed_sqlite_sequence()
    else:
        _replace_postgres_checks(statuses=NEW_STATUSES)


def downgrade() -> None:
    """Undo this revision. The older schema has no ``cancelled`` candidate or evaluation,
    so those rows become ``failed`` (what the older versions wrote for cancelled work)."""
    op.execute(sa.text("UPDATE candidate SET status = 'failed' WHERE status = 'cancelled'"))
    op.execute(sa.text("UPDATE evaluation SET status = 'failed' WHERE status = 'cancelled'"))
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(autoincrement=False, statuses=OLD_STATUSES)
    else:
        _replace_postgres_checks(statuses=OLD_STATUSES)
