"""The store's tables: Alembic's migrations create them, the rest of the package queries them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()

nonces = Table(
    "nonces",
    metadata,
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", DateTime(), nullable=False, index=True),
)

call_events = Table(
    "call_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("received_at", DateTime(), nullable=False, index=True),
    Column("call_uuid", String(64), nullable=False, index=True),
    Column("route", String(32), nullable=False),
    Column("decision", Text(), nullable=False),
    Column("rule", Text()),
    Column("reason", Text()),
    Column("from_number", Text()),
    Column("to_number", Text()),
    Column("sip_auth_type", Text()),
    Column("sip_auth_user", Text()),
    Column("sip_source_ip", Text()),
    Column("group_name", Text()),
    Column("attempt", Integer()),
    Column("dial_status", Text()),
    Column("dial_hangup_cause", Text()),
    Column("auth_failure", Text()),
    Column("a_leg_uuid", Text()),
    Column("b_leg_uuid", Text()),
)

hangups = Table(
    "hangups",
    metadata,
    Column("call_uuid", String(64), primary_key=True),
    Column("received_at", DateTime(), nullable=False),
    Column("call_status", Text()),
    Column("direction", Text()),
    Column("from_number", Text()),
    Column("to_number", Text()),
    Column("hangup_cause", Text()),
    Column("hangup_cause_name", Text()),
    Column("hangup_cause_code", Integer()),
    Column("hangup_source", Text()),
    Column("duration", Integer()),
    Column("bill_duration", Integer()),
    Column("sip_auth_type", Text()),
    Column("sip_auth_user", Text()),
    Column("sip_source_ip", Text()),
    Column("auth_failure", Text()),
    Index("ix_hangups_received_at", "received_at"),
    Index("ix_hangups_auth_failure", "auth_failure", "received_at"),
    Index("ix_hangups_sip_source_ip", "sip_source_ip"),
)


# Refused callbacks are counted per minute, route and reason, never stored one row each: a flood
# of forged requests must not be able to fill the database.
signature_rejections = Table(
    "signature_rejections",
    metadata,
    Column("minute", DateTime(), nullable=False),
    Column("route", String(32), nullable=False),
    Column("reason", String(128), nullable=False),
    Column("count", Integer(), nullable=False),
    PrimaryKeyConstraint("minute", "route", "reason"),
    Index("ix_signature_rejections_minute", "minute"),
)


# Failed /monitor logins, shared by every worker and instance so the throttle is one limit.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("address", String(64), nullable=False),
    Column("at", DateTime(), nullable=False),
    Index("ix_login_failures_address_at", "address", "at"),
)


# Monitor logins, server-side: logging out (or expiry) ends a session even for a copied cookie.
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", DateTime(), nullable=False, index=True),
)
