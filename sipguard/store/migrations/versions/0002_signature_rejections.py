"""Per-minute counts of refused callbacks, for the monitoring page and report.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signature_rejections",
        sa.Column("minute", sa.DateTime(), nullable=False),
        sa.Column("route", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "route", "reason"),
    )
    op.create_index("ix_signature_rejections_minute", "signature_rejections", ["minute"])
    op.create_index("ix_hangups_sip_source_ip", "hangups", ["sip_source_ip"])


def downgrade() -> None:
    op.drop_index("ix_hangups_sip_source_ip", "hangups")
    op.drop_index("ix_signature_rejections_minute", "signature_rejections")
    op.drop_table("signature_rejections")
