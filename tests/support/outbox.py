"""An in-memory outbox honouring the `Outbox` protocol exactly, on an injected clock, for the
worker's tests (the store's own implementation is tested against the database).

A claimed event is leased: no claimer gets it again until `lease` has passed on the clock. A
delivered or given-up event is never claimed again, and a late result for it changes nothing.
Thread-safe, so two workers can share one.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sipguard.notify.model import OutboxEvent
from sipguard.store.database import UtcClock

START = datetime(2026, 12, 1, 12, 0, 0)  # naive UTC, like the store's times


class FakeClock:
    """A naive-UTC clock that moves only when told; safe to read from several threads."""

    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, by: timedelta | float) -> datetime:
        """Move on by `by` (a timedelta or seconds) and return the new time."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        with self._lock:
            self._now += step
            return self._now


@dataclass
class Row:
    """One outbox row, as the store keeps it."""

    event: OutboxEvent  # its `attempts` is kept in `attempts` below
    next_attempt_at: datetime
    attempts: int = 0
    lease_until: datetime | None = None
    delivered_at: datetime | None = None
    gave_up_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None

    @property
    def pending(self) -> bool:
        return self.delivered_at is None and self.gave_up_at is None


class MemoryOutbox:
    """The `Outbox` protocol over a dict."""

    def __init__(self, clock: UtcClock) -> None:
        self.clock = clock
        self.rows: dict[str, Row] = {}
        self.claims: list[tuple[str, datetime]] = []  # (event id, when claimed), every claim
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def add(
        self,
        url: str,
        *,
        body: bytes = b'{"type":"handoff.transferred","data":{}}',
        event_type: str = "handoff.transferred",
        api_key_id: str = "key_0123456789abcdef",
    ) -> str:
        """Enqueue an event due now; return its webhook-id."""
        with self._lock:
            event_id = f"msg_{next(self._ids):026d}"
            now = self.clock()
            event = OutboxEvent(event_id, api_key_id, url, event_type, body, 0, now)
            self.rows[event_id] = Row(event, next_attempt_at=now)
            return event_id

    def claim_due(self, limit: int, lease: timedelta) -> list[OutboxEvent]:
        with self._lock:
            now = self.clock()
            due = [
                row
                for row in self.rows.values()
                if row.pending
                and row.next_attempt_at <= now
                and (row.lease_until is None or row.lease_until <= now)
            ]
            due.sort(key=lambda row: (row.next_attempt_at, row.event.created_at, row.event.id))
            claimed = due[:limit]
            for row in claimed:
                row.lease_until = now + lease
                self.claims.append((row.event.id, now))
            return [replace(row.event, attempts=row.attempts) for row in claimed]

    def mark_delivered(self, event_id: str, status: int) -> None:
        with self._lock:
            row = self.rows[event_id]
            if not row.pending:
                return
            row.attempts += 1
            row.delivered_at = self.clock()
            row.last_status, row.last_error, row.lease_until = status, None, None

    def mark_failed(
        self, event_id: str, retry_at: datetime | None, status: int | None, error: str
    ) -> None:
        with self._lock:
            row = self.rows[event_id]
            if not row.pending:
                return
            row.attempts += 1
            row.last_status, row.last_error, row.lease_until = status, error, None
            if retry_at is None:
                row.gave_up_at = self.clock()
            else:
                row.next_attempt_at = retry_at

    def pending(self) -> list[Row]:
        """Return the rows neither delivered nor given up."""
        with self._lock:
            return [row for row in self.rows.values() if row.pending]

    def next_due(self) -> datetime | None:
        """Return when the next pending event becomes claimable (its retry time or lease end)."""
        with self._lock:
            times = [
                max(row.next_attempt_at, row.lease_until or row.next_attempt_at)
                for row in self.rows.values()
                if row.pending
            ]
            return min(times, default=None)
