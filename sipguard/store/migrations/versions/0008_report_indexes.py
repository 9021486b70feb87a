"""An index for the auth-failure report's call events: the few failures of a time range.

Without it the report (and /monitor, which shows it) reads every call event of the range to
find the Dial actions that failed SIP auth; with a month of a busy contact centre stored that
is tens of thousands of rows for 24 hours. The index holds only the failures, by time.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_FAILED = sa.text("auth_failure IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_call_events_failures_at",
        "call_events",
        ["received_at"],
        sqlite_where=_FAILED,
        postgresql_where=_FAILED,
    )


def downgrade() -> None:
    op.drop_index("ix_call_events_failures_at", table_name="call_events")
