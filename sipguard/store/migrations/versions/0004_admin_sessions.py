"""Server-side /monitor sessions, so logging out ends a session even for a copied cookie.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_admin_sessions_created_at", "admin_sessions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_admin_sessions_created_at", "admin_sessions")
    op.drop_table("admin_sessions")
