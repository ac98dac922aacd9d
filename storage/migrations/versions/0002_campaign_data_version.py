"""campaign.data_version: a counter raised by every write to a campaign's candidate data

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.add_column(
        "campaign", sa.Column("data_version", sa.BigInteger(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    """Undo this revision (in place: SQLite >= 3.35 drops a column without copying the
    table, so the campaign's cascading children are never touched)."""
    op.drop_column("campaign", "data_version")
