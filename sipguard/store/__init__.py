"""The event store, on SQLite or PostgreSQL: one `Store` over the parts in this package.

database  the engine, the clock, failures as StoreUnavailable (`Database`)
schema    the tables
ledger    callbacks with their nonce claims, rejection counts, purging (`Ledger`)
admin     monitor login failures and admin sessions (`AdminAccess`)
migrate   Alembic upgrades under a migration lock (`Migrations`)
"""

from __future__ import annotations

from sipguard.store.admin import AdminAccess
from sipguard.store.database import UtcClock, normalise_url, now_utc
from sipguard.store.ledger import CallEvent, Ledger, Replayed
from sipguard.store.migrate import Migrations
from sipguard.store.schema import (
    admin_sessions,
    call_events,
    hangups,
    login_failures,
    metadata,
    nonces,
    signature_rejections,
)


class Store(Ledger, AdminAccess, Migrations):
    """The app's one handle on its database: every part shares one engine and one clock.

    The parts are mixed in, not held as attributes, so callers write `store.record(...)` and a
    hot-path call costs no extra hop.
    """


__all__ = [
    "CallEvent",
    "Replayed",
    "Store",
    "UtcClock",
    "admin_sessions",
    "call_events",
    "hangups",
    "login_failures",
    "metadata",
    "nonces",
    "normalise_url",
    "now_utc",
    "signature_rejections",
]
