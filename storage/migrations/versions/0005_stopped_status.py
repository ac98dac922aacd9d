"""status 'stopped' for candidates and evaluations (successive-halving promotion)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

With promotion on, a candidate whose partial accuracy at a rung is not in the top fraction
of that rung is ``stopped``: its evaluation ends there, with the rung and the partial
accuracy in its result. The candidate and evaluation CHECK constraints gain that status.

SQLite alters no CHECK in place, so the two tables are rebuilt (copied into a new table,
the old one dropped, the new one renamed), keeping AUTOINCREMENT (migration 0003); the
migration environment runs SQLite migrations with ``PRAGMA foreign_keys=OFF`` so that the
rebuild cascades nothing, and ``PRAGMA foreign_key_check`` must report nothing afterwards.
On PostgreSQL the two CHECKs are replaced.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_CANDIDATE_STATUSES = (
    "proposed",
    "running",
    "completed",
    "rejected",
    "failed",
    "duplicate",
    "cancelled",
)
OLD_EVALUATION_STATUSES = ("queued", "running", "completed", "failed", "timeout", "cancelled")
OLD_STATUSES = {"candidate": OLD_CANDIDATE_STATUSES, "evaluation": OLD_EVALUATION_STATUSES}
NEW_STATUSES = {table: (*statuses, "stopped") for table, statuses in OLD_STATUSES.items()}
CHECK_NAMES = {"candidate": "ck_candidate_status", "evaluation": "ck_evaluation_status"}


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _replace_checks(statuses: dict[str, tuple[str, ...]]) -> None:
    """Put the status CHECKs for ``statuses`` on the candidate and evaluation tables."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        for table, name in CHECK_NAMES.items():
            op.drop_constraint(name, table, type_="check")
            op.create_check_constraint(name, table, _in("status", statuses[table]))
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0005 must run with PRAGMA foreign_keys=OFF on SQLite (env.py sets it): "
            "rebuilding a parent table with foreign keys on would delete its children"
        )
    for table, name in CHECK_NAMES.items():
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch_op:
            batch_op.drop_constraint(name, type_="check")
            batch_op.create_check_constraint(name, _in("status", statuses[table]))
    problems = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise RuntimeError(f"migration 0005 would break foreign keys: {problems[:20]}")


def upgrade() -> None:
    """Apply this revision."""
    _replace_checks(NEW_STATUSES)


def downgrade() -> None:
    """Undo this revision. The older schema has no ``stopped`` status: such candidates
    become ``rejected`` and their evaluations ``completed`` (the result still says where
    and why the run stopped)."""
    op.execute(sa.text("UPDATE candidate SET status = 'rejected' WHERE status = 'stopped'"))
    op.execute(sa.text("UPDATE evaluation SET status = 'completed' WHERE status = 'stopped'"))
    _replace_checks(OLD_STATUSES)
