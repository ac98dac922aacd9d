"""campaign.idempotency_hash: the hash of the normalized spec submitted under an Idempotency-Key

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

The unique ``idempotency_key`` decides which of several concurrent submissions with one key
creates the campaign; the hash stored beside it lets every other submission tell whether it
sent the same body (it gets the same campaign) or another one (409 ``idempotency_conflict``).
Nullable: campaigns stored before this revision have none, and are compared by their spec.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.add_column("campaign", sa.Column("idempotency_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Undo this revision (in place: SQLite >= 3.35 drops a column without copying the
    table, so the campaign's cascading children are never touched)."""
    op.drop_column("campaign", "idempotency_hash")
