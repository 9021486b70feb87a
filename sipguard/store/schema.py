"""The store's tables: Alembic's migrations create them, the rest of the package queries them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.sql.elements import TextClause

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
    # The auth-failure report's Dial actions that failed SIP auth, by time (migration 0008).
    Index(
        "ix_call_events_failures_at",
        "received_at",
        sqlite_where=text("auth_failure IS NOT NULL"),
        postgresql_where=text("auth_failure IS NOT NULL"),
    ),
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


# The AI side's API keys: only the hash of a key's secret part is kept, and a revoked key stays
# (revoked_at set) so its handoffs and undelivered webhooks still name it.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # "key_" + 16 of [0-9a-z]
    Column("name", String(64), nullable=False),
    Column("secret_hash", String(64), nullable=False),  # hex sha256 of the secret part
    Column("callback_url", Text()),
    Column("created_at", DateTime(), nullable=False),
    Column("revoked_at", DateTime()),
    UniqueConstraint("name", name="uq_api_keys_name"),
)

# Handoff states in which the call is still being handed over: at most one such row per call.
LIVE_STATES = ("requested", "transferred", "ringing", "connected")


def state_in(states: tuple[str, ...]) -> TextClause:
    """Return `state IN (...)` with `states` inlined as literals (they are constants).

    SQLite uses a partial index only when the query repeats the index's condition, and bound
    parameters do not count: the live-handoff look-ups repeat `LIVE` so, and a statement
    compiled once (`Prepared`) needs no expanding parameter.
    """
    if not all(state.isidentifier() for state in states):  # inlined: no quote may slip in
        raise ValueError(f"not a state name: {states!r}")
    return text("state IN ({})".format(", ".join(f"'{state}'" for state in states)))


LIVE = state_in(LIVE_STATES)

# The AI's requests to hand a call to a human. `summary` is personal data (purged with the rest
# after RETENTION_DAYS); the unique indexes decide idempotency and "one live handoff per call",
# so two instances sharing PostgreSQL agree without a read-then-write.
handoffs = Table(
    "handoffs",
    metadata,
    Column("id", String(32), primary_key=True),  # "ho_" + 22 of [0-9a-z]
    Column("api_key_id", String(32), nullable=False),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64), nullable=False),
    Column("call_uuid", String(64), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("summary", Text()),
    Column("fields", Text(), nullable=False),  # a JSON object
    Column("whisper", Boolean(), nullable=False),
    Column("on_failure", String(16), nullable=False),  # 'return' or 'fallback'
    Column("return_url", Text()),
    Column("callback_url", Text()),
    Column("state", String(16), nullable=False),
    Column("plivo_api_id", String(64)),
    Column("error", Text()),
    Column("created_at", DateTime(), nullable=False),
    Column("updated_at", DateTime(), nullable=False),
    ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name="fk_handoffs_api_key_id"),
    UniqueConstraint("api_key_id", "idempotency_key", name="uq_handoffs_idempotency"),
    Index(
        "ux_handoffs_live_call",
        "call_uuid",
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    ),
    Index("ix_handoffs_created_at", "created_at"),
)

# Each Dial of a handoff: which agents rang and how it ended (4240/4250 for SIP-auth failures).
handoff_attempts = Table(
    "handoff_attempts",
    metadata,
    Column("handoff_id", String(32), nullable=False),
    Column("attempt", Integer(), nullable=False),
    Column("agents", Text(), nullable=False),  # a JSON list of agent names
    Column("outcome", String(24)),
    Column("code", Integer()),
    Column("started_at", DateTime(), nullable=False),
    Column("ended_at", DateTime()),
    PrimaryKeyConstraint("handoff_id", "attempt"),
    ForeignKeyConstraint(["handoff_id"], ["handoffs.id"], name="fk_handoff_attempts_handoff_id"),
)

_UNDELIVERED = text("delivered_at IS NULL AND gave_up_at IS NULL")

# Outcome webhooks waiting for delivery, written in the transaction of the state change they
# report. `body` holds the exact bytes signed and sent; `id` is the webhook-id, stable across
# retries. No foreign key to handoffs: an undelivered event outlives its purged handoff.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", String(32), primary_key=True),  # "msg_" + 26 of [0-9a-z]
    Column("api_key_id", String(32), nullable=False),
    Column("handoff_id", String(32)),
    Column("url", Text(), nullable=False),
    Column("event_type", String(48), nullable=False),
    Column("body", LargeBinary(), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("next_attempt_at", DateTime(), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("lease_until", DateTime()),
    Column("delivered_at", DateTime()),
    Column("gave_up_at", DateTime()),
    Column("last_status", Integer()),
    Column("last_error", Text()),
    Index(
        "ix_webhook_outbox_due",
        "next_attempt_at",
        sqlite_where=_UNDELIVERED,
        postgresql_where=_UNDELIVERED,
    ),
)

# Each agent's run of SIP-auth failures towards its PBX (4240/4250), and its quarantine. Agent
# names from the voice config only, nothing personal: rows are kept (not purged) so a
# quarantine outlives RETENTION_DAYS, and one row per agent bounds the table.
agent_health = Table(
    "agent_health",
    metadata,
    Column("agent", String(64), primary_key=True),
    Column("failures", Integer(), nullable=False),  # consecutive, reset by a success
    Column("last_cause", String(24)),  # sip_auth_failed | sip_auth_timeout
    Column("quarantined_since", DateTime()),
    Column("quarantined_until", DateTime()),
    Column("updated_at", DateTime(), nullable=False),
)

# Alerts raised: one row per condition, subject (an IP, an agent, a route) and window, so
# concurrent workers and instances push each alert once (the primary key decides). Purged with
# the events after RETENTION_DAYS (a subject may be a source IP).
alerts = Table(
    "alerts",
    metadata,
    Column("condition", String(32), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("window_start", DateTime(), nullable=False),
    Column("raised_at", DateTime(), nullable=False),
    PrimaryKeyConstraint("condition", "subject", "window_start"),
    Index("ix_alerts_raised_at", "raised_at"),
)
