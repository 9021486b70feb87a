"""Read what the store holds, for assertions: the rows of a call, and the schema's revision."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from sipguard.store import Store, call_events, hangups
from sipguard.store.migrate import alembic_config


def stored_hangup(store: Store, call_uuid: str) -> dict[str, Any] | None:
    """Return the stored hangup row of a call, if any."""
    rows = store.query(select(hangups).where(hangups.c.call_uuid == call_uuid))
    return rows[0] if rows else None


def stored_events(store: Store, call_uuid: str | None = None) -> list[dict[str, Any]]:
    """Return stored call events in arrival order, for one call or all."""
    query = select(call_events).order_by(call_events.c.id)
    if call_uuid is not None:
        query = query.where(call_events.c.call_uuid == call_uuid)
    return store.query(query)


def schema_is_current(store: Store) -> bool | None:
    """Tell whether the schema is at the newest revision; None when the database is down."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    try:
        with store.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError:
        return None
    return current == head
