"""The outbox of outcome webhooks: events written with the state change they report, claimed
by delivery workers under a lease, marked delivered or failed.

A claim leases its events (`lease_until`), so two workers or instances never hold one event at
the same time; a worker that dies mid-delivery loses its lease when it runs out, and the event is
claimed again with the same webhook-id. On PostgreSQL the due rows are locked with
FOR UPDATE SKIP LOCKED and leased in the same transaction; SQLite serialises writers, so one
UPDATE ... RETURNING both picks and leases them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from sipguard.notify.model import OutboxEvent
from sipguard.store.api_keys import random_id
from sipguard.store.database import Database
from sipguard.store.schema import webhook_outbox

EVENT_ID_PREFIX = "msg_"
EVENT_ID_LENGTH = 26
MAX_ERROR_LENGTH = 500

_EVENT_COLUMNS = (
    webhook_outbox.c.id,
    webhook_outbox.c.api_key_id,
    webhook_outbox.c.url,
    webhook_outbox.c.event_type,
    webhook_outbox.c.body,
    webhook_outbox.c.attempts,
    webhook_outbox.c.created_at,
    webhook_outbox.c.next_attempt_at,
)
_UNFINISHED = (webhook_outbox.c.delivered_at.is_(None), webhook_outbox.c.gave_up_at.is_(None))


def timestamp(when: datetime) -> str:
    """Return a naive UTC time as ISO 8601 with a Z (the events' `timestamp`)."""
    return when.isoformat(timespec="milliseconds") + "Z"


def event_body(event_type: str, when: datetime, data: Mapping[str, Any]) -> bytes:
    """Return an event's JSON document, exactly as it is stored, signed and sent."""
    document = {"type": event_type, "timestamp": timestamp(when), "data": dict(data)}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def enqueue(
    conn: Connection,
    *,
    now: datetime,
    api_key_id: str,
    handoff_id: str | None,
    url: str,
    event_type: str,
    data: Mapping[str, Any],
    body: bytes | None = None,
) -> str:
    """Write one event to the outbox inside the caller's transaction; return its webhook-id.

    The body is the event's JSON document, unless `body` gives other bytes to send (a Slack
    alert's).
    """
    event_id = random_id(EVENT_ID_PREFIX, EVENT_ID_LENGTH)
    conn.execute(
        insert(webhook_outbox).values(
            id=event_id,
            api_key_id=api_key_id,
            handoff_id=handoff_id,
            url=url,
            event_type=event_type,
            body=body if body is not None else event_body(event_type, now, data),
            created_at=now,
            next_attempt_at=now,
            attempts=0,
        )
    )
    return event_id


def _event(row: Any) -> OutboxEvent:
    return OutboxEvent(
        id=row.id,
        api_key_id=row.api_key_id,
        url=row.url,
        event_type=row.event_type,
        body=bytes(row.body),
        attempts=row.attempts,
        created_at=row.created_at,
    )


class OutboxStore(Database):
    """The store's side of webhook delivery (the `Outbox` protocol of sipguard.notify.model)."""

    def claim_due(self, limit: int, lease: timedelta) -> list[OutboxEvent]:
        """Return up to `limit` due, undelivered events, leased to the caller for `lease`."""
        if limit <= 0:
            return []
        now = self._clock()
        due = (
            select(webhook_outbox.c.id)
            .where(
                *_UNFINISHED,
                webhook_outbox.c.next_attempt_at <= now,
                or_(webhook_outbox.c.lease_until.is_(None), webhook_outbox.c.lease_until <= now),
            )
            .order_by(webhook_outbox.c.next_attempt_at, webhook_outbox.c.id)
            .limit(limit)
        )
        postgresql = self.dialect == "postgresql"

        def claim(conn: Connection) -> list[OutboxEvent]:
            if postgresql:
                # Rows another worker has locked are skipped, not waited for.
                ids = list(conn.execute(due.with_for_update(skip_locked=True)).scalars())
                if not ids:
                    return []
                chosen: Any = webhook_outbox.c.id.in_(ids)
            else:
                chosen = webhook_outbox.c.id.in_(due)
            rows = conn.execute(
                update(webhook_outbox)
                .where(chosen)
                .values(lease_until=now + lease)
                .returning(*_EVENT_COLUMNS)
            ).all()
            # RETURNING keeps no order; hand the oldest due event out first.
            ordered = sorted(rows, key=lambda row: (row.next_attempt_at, row.id))
            return [_event(row) for row in ordered]

        return self._run(claim)

    def mark_delivered(self, event_id: str, status: int) -> None:
        """Record that the receiver accepted the event; it is never claimed again."""
        statement = (
            update(webhook_outbox)
            .where(webhook_outbox.c.id == event_id, *_UNFINISHED)
            .values(
                delivered_at=self._clock(),
                attempts=webhook_outbox.c.attempts + 1,
                lease_until=None,
                last_status=status,
                last_error=None,
            )
        )
        self._run(lambda conn: conn.execute(statement))

    def mark_failed(
        self, event_id: str, retry_at: datetime | None, status: int | None, error: str
    ) -> None:
        """Record a failed attempt: due again at `retry_at`, or given up for good when None."""
        values: dict[str, Any] = {
            "attempts": webhook_outbox.c.attempts + 1,
            "lease_until": None,
            "last_status": status,
            "last_error": error[:MAX_ERROR_LENGTH],
        }
        if retry_at is None:
            values["gave_up_at"] = self._clock()
        else:
            values["next_attempt_at"] = retry_at
        statement = (
            update(webhook_outbox)
            .where(webhook_outbox.c.id == event_id, *_UNFINISHED)
            .values(**values)
        )
        self._run(lambda conn: conn.execute(statement))
