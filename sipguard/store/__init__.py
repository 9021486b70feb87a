"""The event store, on SQLite or PostgreSQL: one `Store` over the parts in this package.

database  the engine, the clock, failures as StoreUnavailable (`Database`)
schema    the tables
ledger    callbacks with their nonce claims, rejection counts, purging (`Ledger`)
admin     monitor login failures and admin sessions (`AdminAccess`)
api_keys  the AI side's API keys, kept as hashes (`ApiKeys`)
handoffs  handoffs with their idempotency, states and attempts (`Handoffs`)
alerts    alerts raised once per condition, subject and window, queued in the outbox
agent_health  agents' SIP-auth failure runs and quarantines (`AgentHealthStore`)
outbox    outcome webhooks waiting for delivery, claimed under a lease (`OutboxStore`)
migrate   Alembic upgrades under a migration lock (`Migrations`)
"""

from __future__ import annotations

from sipguard.store.admin import AdminAccess
from sipguard.store.agent_health import AgentHealth, AgentHealthStore
from sipguard.store.alerts import Alerting
from sipguard.store.api_keys import ApiKey, ApiKeys, NewApiKey, Revocation
from sipguard.store.database import UtcClock, normalise_url, now_utc
from sipguard.store.handoffs import (
    Attempt,
    Created,
    Handoff,
    HandoffRequest,
    Handoffs,
    Transition,
)
from sipguard.store.ledger import CallEvent, Ledger, Replayed
from sipguard.store.migrate import Migrations
from sipguard.store.outbox import OutboxStore
from sipguard.store.schema import (
    admin_sessions,
    agent_health,
    alerts,
    api_keys,
    call_events,
    handoff_attempts,
    handoffs,
    hangups,
    login_failures,
    metadata,
    nonces,
    signature_rejections,
    webhook_outbox,
)


class Store(Ledger, AdminAccess, ApiKeys, Handoffs, AgentHealthStore, OutboxStore, Migrations):
    """The app's one handle on its database: every part shares one engine and one clock.

    The parts are mixed in, not held as attributes, so callers write `store.record(...)` and a
    hot-path call costs no extra hop.
    """


__all__ = [
    "AgentHealth",
    "Alerting",
    "ApiKey",
    "Attempt",
    "CallEvent",
    "Created",
    "Handoff",
    "HandoffRequest",
    "NewApiKey",
    "Replayed",
    "Revocation",
    "Store",
    "Transition",
    "UtcClock",
    "admin_sessions",
    "agent_health",
    "alerts",
    "api_keys",
    "call_events",
    "handoff_attempts",
    "handoffs",
    "hangups",
    "login_failures",
    "metadata",
    "nonces",
    "normalise_url",
    "now_utc",
    "signature_rejections",
    "webhook_outbox",
]
