"""Initial schema: nonces, call events, hangups.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nonces",
        sa.Column("nonce", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_nonces_expires_at", "nonces", ["expires_at"])
    op.create_table(
        "call_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("call_uuid", sa.String(64), nullable=False),
        sa.Column("route", sa.String(32), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text()),
        sa.Column("reason", sa.Text()),
        sa.Column("from_number", sa.Text()),
        sa.Column("to_number", sa.Text()),
        sa.Column("sip_auth_type", sa.Text()),
        sa.Column("sip_auth_user", sa.Text()),
        sa.Column("sip_source_ip", sa.Text()),
        sa.Column("group_name", sa.Text()),
        sa.Column("attempt", sa.Integer()),
        sa.Column("dial_status", sa.Text()),
        sa.Column("dial_hangup_cause", sa.Text()),
        sa.Column("auth_failure", sa.Text()),
        sa.Column("a_leg_uuid", sa.Text()),
        sa.Column("b_leg_uuid", sa.Text()),
    )
    op.create_index("ix_call_events_received_at", "call_events", ["received_at"])
    op.create_index("ix_call_events_call_uuid", "call_events", ["call_uuid"])
    op.create_table(
        "hangups",
        sa.Column("call_uuid", sa.String(64), primary_key=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("call_status", sa.Text()),
        sa.Column("direction", sa.Text()),
        sa.Column("from_number", sa.Text()),
        sa.Column("to_number", sa.Text()),
        sa.Column("hangup_cause", sa.Text()),
        sa.Column("hangup_cause_name", sa.Text()),
        sa.Column("hangup_cause_code", sa.Integer()),
        sa.Column("hangup_source", sa.Text()),
        sa.Column("duration", sa.Integer()),
        sa.Column("bill_duration", sa.Integer()),
        sa.Column("sip_auth_type", sa.Text()),
        sa.Column("sip_auth_user", sa.Text()),
        sa.Column("sip_source_ip", sa.Text()),
        sa.Column("auth_failure", sa.Text()),
    )
    op.create_index("ix_hangups_received_at", "hangups", ["received_at"])
    op.create_index("ix_hangups_auth_failure", "hangups", ["auth_failure", "received_at"])


def downgrade() -> None:
    op.drop_table("hangups")
    op.drop_table("call_events")
    op.drop_table("nonces")
