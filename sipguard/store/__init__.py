"""The event store, on SQLite or PostgreSQL: one `Store` over the parts in this package.

database  the engine, the clock, failures as StoreUnavailable (`Database`)
schema    the tables
ledger    callbacks with their nonce claims, rejection counts, purging (`Ledger`)
admin     monitor login failures and admin sessions (`AdminAccess`)
migrate   Alembic upgrades under a migration lock (`Migrations`)
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from sipguard.store.admin import AdminAccess
from sipguard.store.database import Clock, normalise_url, utcnow
from sipguard.store.ledger import CallEvent, Ledger, Replayed
from sipguard.store.migrate import Migrations, alembic_config
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

    def hangup(self, call_uuid: str) -> dict[str, Any] | None:
        """Return the stored hangup row of a call, if any."""
        rows = self.query(select(hangups).where(hangups.c.call_uuid == call_uuid))
        return rows[0] if rows else None

    def events(self, call_uuid: str | None = None) -> list[dict[str, Any]]:
        """Return stored call events in arrival order, for one call or all."""
        query = select(call_events).order_by(call_events.c.id)
        if call_uuid is not None:
            query = query.where(call_events.c.call_uuid == call_uuid)
        return self.query(query)

    def schema_is_current(self) -> bool | None:
        """Tell whether the schema is at the newest revision; None when the database is down."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError:
            return None
        return current == head


__all__ = [
    "CallEvent",
    "Clock",
    "Replayed",
    "Store",
    "admin_sessions",
    "call_events",
    "hangups",
    "login_failures",
    "metadata",
    "nonces",
    "normalise_url",
    "signature_rejections",
    "utcnow",
]
