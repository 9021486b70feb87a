"""Alerts in the store: one per condition, subject and window, queued in the webhook outbox.

Raising an alert inserts its (condition, subject, window) row with ON CONFLICT DO NOTHING and,
only when the row is new, queues one outbox event per configured receiver in the same
transaction: concurrent workers and instances push it once, and the `sipguard worker` delivers
it like a handoff webhook (signed, retried). Windows are fixed slices of `window` (UTC), so a
condition that lasts gets one alert per slice. Each Store also remembers the alerts it raised,
so a flood of the same event costs one statement per window, not one per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, or_, select

from sipguard.notify.alerts import SLACK, Alert, slack_body
from sipguard.store.database import Database, UtcClock, now_utc
from sipguard.store.outbox import enqueue
from sipguard.store.schema import alerts, hangups, signature_rejections

_EPOCH = datetime(1970, 1, 1)
_MEMO_LIMIT = 1024


@dataclass(frozen=True)
class Alerting:
    """Which receivers get alerts (outbox owner ids), the dedup window and the burst threshold."""

    receivers: tuple[str, ...] = ()
    window: timedelta = timedelta(minutes=15)
    refused_per_minute: int = 20

    @property
    def active(self) -> bool:
        """Tell whether any receiver is configured (else nothing is raised or stored)."""
        return bool(self.receivers)


def window_start(now: datetime, window: timedelta) -> datetime:
    """Return the start of the fixed window `now` falls in."""
    slices = (now - _EPOCH) // window
    return _EPOCH + slices * window


class AlertsStore(Database):
    """Raise alerts once per window; read what the alert conditions need."""

    def __init__(self, url: str, *, clock: UtcClock = now_utc, threads: int = 1) -> None:
        super().__init__(url, clock=clock, threads=threads)
        self.alerting = Alerting()
        self._raised: set[tuple[str, str, datetime]] = set()

    def raise_alert(self, alert: Alert) -> bool:
        """Queue `alert` for every receiver unless its window has it already; True when queued."""
        if not self.alerting.active:
            return False
        now = self._clock()
        key = (alert.condition, alert.subject[:128], window_start(now, self.alerting.window))
        if key in self._raised:
            return False
        queued = self._run(lambda conn: self._queue_alert(conn, now, alert))
        if len(self._raised) >= _MEMO_LIMIT:
            self._raised.clear()
        self._raised.add(key)
        return queued

    def _queue_alert(self, conn: Connection, now: datetime, alert: Alert) -> bool:
        """Raise `alert` inside the caller's transaction; True when this call queued it."""
        policy = self.alerting
        if not policy.active:
            return False
        start = window_start(now, policy.window)
        claimed = conn.execute(
            self._insert()(alerts)
            .values(
                condition=alert.condition,
                subject=alert.subject[:128],
                window_start=start,
                raised_at=now,
            )
            .on_conflict_do_nothing()
            .returning(alerts.c.condition)
        ).first()
        if claimed is None:
            return False
        for receiver in policy.receivers:
            enqueue(
                conn,
                now=now,
                api_key_id=receiver,
                handoff_id=None,
                url=receiver,  # resolved from the settings when delivered: never stored
                event_type=f"alert.{alert.condition}",
                data=alert.data(start),
                body=slack_body(alert) if receiver == SLACK else None,
            )
        return True

    def refused_in_minute(self, minute: datetime) -> int:
        """Return how many callbacks were refused in `minute`, every route and reason."""
        statement = select(func.coalesce(func.sum(signature_rejections.c["count"]), 0)).where(
            signature_rejections.c.minute == minute
        )
        return int(self._run(lambda conn: conn.execute(statement).scalar_one(), write=False))

    def auth_failures_from(self, ip: str, since: datetime) -> list[datetime]:
        """Return when inbound calls from source IP `ip` failed SIP auth since `since`."""
        statement = (
            select(hangups.c.received_at)
            .where(
                hangups.c.auth_failure.is_not(None),
                hangups.c.received_at >= since,
                hangups.c.sip_source_ip == ip,
                or_(hangups.c.direction.is_(None), hangups.c.direction != "outbound"),
            )
            .order_by(hangups.c.received_at)
        )
        return list(self._run(lambda conn: conn.execute(statement).scalars().all(), write=False))
