"""API keys, handoffs with their attempts, and the outbox of outcome webhooks.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_LIVE = sa.text("state IN ('requested', 'transferred', 'ringing', 'connected')")
_UNDELIVERED = sa.text("delivered_at IS NULL AND gave_up_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("callback_url", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime()),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
    )
    op.create_table(
        "handoffs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("api_key_id", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("call_uuid", sa.String(64), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("summary", sa.Text()),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("whisper", sa.Boolean(), nullable=False),
        sa.Column("on_failure", sa.String(16), nullable=False),
        sa.Column("return_url", sa.Text()),
        sa.Column("callback_url", sa.Text()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("plivo_api_id", sa.String(64)),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name="fk_handoffs_api_key_id"),
        sa.UniqueConstraint("api_key_id", "idempotency_key", name="uq_handoffs_idempotency"),
    )
    op.create_index(
        "ux_handoffs_live_call",
        "handoffs",
        ["call_uuid"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
    op.create_index("ix_handoffs_created_at", "handoffs", ["created_at"])
    op.create_table(
        "handoff_attempts",
        sa.Column("handoff_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("agents", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(24)),
        sa.Column("code", sa.Integer()),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("handoff_id", "attempt"),
        sa.ForeignKeyConstraint(
            ["handoff_id"], ["handoffs.id"], name="fk_handoff_attempts_handoff_id"
        ),
    )
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("api_key_id", sa.String(32), nullable=False),
        sa.Column("handoff_id", sa.String(32)),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(48), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("delivered_at", sa.DateTime()),
        sa.Column("gave_up_at", sa.DateTime()),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index(
        "ix_webhook_outbox_due",
        "webhook_outbox",
        ["next_attempt_at"],
        sqlite_where=_UNDELIVERED,
        postgresql_where=_UNDELIVERED,
    )


def downgrade() -> None:
    op.drop_table("webhook_outbox")
    op.drop_table("handoff_attempts")
    op.drop_table("handoffs")
    op.drop_table("api_keys")
