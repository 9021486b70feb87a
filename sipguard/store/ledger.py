"""The callback ledger: call decisions, hangups, spent nonces and counts of refused callbacks.

Every signed callback ends in one transaction that claims its nonce and writes its rows, so a
nonce is spent exactly when the callback's effects are stored: a callback answered 503 can be
retried, and two instances sharing PostgreSQL cannot both accept the same nonce (the primary key
decides, not a read-then-write).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, exists, func, insert, or_, select

from sipguard.calls.forms import Hangup
from sipguard.errors import SignatureError, StoreUnavailable
from sipguard.store.database import Database, Prepared, UtcClock, insert_for, now_utc
from sipguard.store.handoffs import waiting_handoff
from sipguard.store.schema import (
    alerts,
    call_events,
    handoff_attempts,
    handoffs,
    hangups,
    nonces,
    signature_rejections,
    webhook_outbox,
)

log = logging.getLogger("sipguard.store")


@dataclass(frozen=True)
class CallEvent:
    """One routing decision (answer, handoff or dial action) for the event log."""

    route: str
    call_uuid: str
    decision: str
    rule: str | None = None
    reason: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    sip_auth_type: str | None = None
    sip_auth_user: str | None = None
    sip_source_ip: str | None = None
    group_name: str | None = None
    attempt: int | None = None
    dial_status: str | None = None
    dial_hangup_cause: str | None = None
    auth_failure: str | None = None
    a_leg_uuid: str | None = None
    b_leg_uuid: str | None = None


_EVENT_FIELDS = tuple(CallEvent.__dataclass_fields__)


class Replayed(SignatureError):
    """The nonce was already accepted within its TTL."""

    def __init__(self) -> None:
        super().__init__("replayed")


def _hangup_row(hangup: Hangup, received_at: datetime) -> dict[str, Any]:
    return {
        "call_uuid": hangup.call_uuid,
        "received_at": received_at,
        "call_status": hangup.call_status,
        "direction": hangup.direction,
        "from_number": hangup.from_,
        "to_number": hangup.to,
        "hangup_cause": hangup.hangup_cause,
        "hangup_cause_name": hangup.hangup_cause_name,
        "hangup_cause_code": hangup.hangup_cause_code,
        "hangup_source": hangup.hangup_source,
        "duration": hangup.duration,
        "bill_duration": hangup.bill_duration,
        "sip_auth_type": hangup.sip_auth_type,
        "sip_auth_user": hangup.sip_auth_user,
        "sip_source_ip": hangup.sip_source_ip,
        "auth_failure": hangup.auth_failure,
    }


def _event_row(event: CallEvent) -> dict[str, Any]:
    # dataclasses.asdict deep-copies; the fields are flat, so a plain read is enough.
    return {name: getattr(event, name) for name in _EVENT_FIELDS}


_HANGUP_FIELDS = tuple(column.key for column in hangups.columns)  # _hangup_row sets each


@dataclass(frozen=True)
class _Statements:
    """The callback writes, compiled once for the store's dialect and run on the driver."""

    claim: Prepared
    event: Prepared
    hangup: Prepared
    waiting: Prepared  # the hangup's call's live handoff that no agent took yet
    # PostgreSQL only: the claim and its rows as one statement, by shape (an event? a hangup?).
    together: Mapping[tuple[bool, bool], Prepared]

    @classmethod
    def build(cls, dialect: Any) -> _Statements:
        insert_ = insert_for(dialect)
        claim = _claim(insert_)
        hangup = insert_(hangups).on_conflict_do_nothing(index_elements=[hangups.c.call_uuid])
        together = {}
        if dialect.name == "postgresql":
            shapes = [
                (event, with_hangup) for event in (False, True) for with_hangup in (False, True)
            ]
            together = {shape: Prepared(_claim_with(insert_, *shape), dialect) for shape in shapes}
        return cls(
            claim=Prepared(claim, dialect),
            event=Prepared(insert(call_events), dialect, (*_EVENT_FIELDS, "received_at")),
            hangup=Prepared(hangup, dialect, _HANGUP_FIELDS),
            waiting=Prepared(waiting_handoff(bindparam("call_uuid")), dialect),
            together=together,
        )


def _claim_with(insert_: Any, event: bool, hangup: bool) -> Any:
    """The one statement that claims the nonce and, only when it did, inserts the call event
    (binds `e_route`, ...) and the hangup (`h_call_uuid`, ...).

    Data-modifying CTEs: each row is selected from the claim's RETURNING, so none is written
    when the nonce was live already; the statement answers how many nonces it claimed (0 or 1)
    and, with a hangup, whether its call has a handoff waiting (`waiting`).
    One statement is one transaction, atomic without BEGIN and COMMIT around it. (The CTEs run
    in no set order, so two events, whose ids must follow their order, are not written this
    way.)
    """
    claimed = _claim(insert_).cte("claimed")
    fields = (*_EVENT_FIELDS, "received_at")
    rows = [_rows_from(claimed, insert(call_events), "e_", fields).cte("event")] if event else []
    if hangup:
        into = insert_(hangups).on_conflict_do_nothing(index_elements=[hangups.c.call_uuid])
        rows.append(_rows_from(claimed, into, "h_", _HANGUP_FIELDS).cte("hangup"))
    answers: list[Any] = [func.count().label("claimed")]
    if hangup:
        call_uuid = bindparam("h_call_uuid", type_=hangups.c.call_uuid.type)
        answers.append(exists(waiting_handoff(call_uuid)).label("waiting"))
    return select(*answers).select_from(claimed).add_cte(*rows)


def _claim(insert_: Any) -> Any:
    """INSERT the nonce, or take over its expired row; RETURNING only when it was claimed."""
    claim = insert_(nonces).values(nonce=bindparam("nonce"), expires_at=bindparam("expires_at"))
    return claim.on_conflict_do_update(
        index_elements=[nonces.c.nonce],
        set_={"expires_at": claim.excluded.expires_at},
        where=nonces.c.expires_at < bindparam("now"),
    ).returning(nonces.c.nonce)


def _rows_from(claimed: Any, into: Any, prefix: str, fields: Sequence[str]) -> Any:
    """`into` ... SELECT the bound values `prefix` + field FROM `claimed` (one row, or none)."""
    table = into.table
    values = [bindparam(prefix + name, type_=table.c[name].type) for name in fields]
    return into.from_select(list(fields), select(*values).select_from(claimed))


class Ledger(Database):
    """Store callbacks with their nonce claims; purge what has expired or aged out."""

    def __init__(
        self,
        url: str,
        *,
        clock: UtcClock = now_utc,
        purge_every: timedelta = timedelta(seconds=60),
        threads: int = 1,
    ) -> None:
        super().__init__(url, clock=clock, threads=threads)
        self._purge_every = purge_every
        self._next_purge = 0.0

    def record(
        self,
        *,
        nonce: str | None,
        nonce_ttl: timedelta,
        events: Sequence[CallEvent] = (),
        hangup: Hangup | None = None,
    ) -> bool:
        """Claim `nonce` and store `events` and `hangup` in one transaction.

        Returns whether `hangup`'s call has a live handoff that no agent took yet, read in the
        same transaction (False without a hangup): the caller leaving ends it. Raises Replayed
        when the nonce is live already (nothing is written), and StoreUnavailable when the
        database fails (nothing is written either).
        """
        now = self._clock()
        statements = self._compiled(_Statements.build)
        if nonce is not None and len(events) <= 1 and statements.together:  # PostgreSQL
            waiting = self._record_at_once(statements, now, nonce, nonce_ttl, events, hangup)
            self._maybe_purge()
            return waiting

        def write(cursor: Any) -> bool:
            if nonce is not None:
                cursor.execute(
                    statements.claim.sql,
                    statements.claim.params(
                        {"nonce": nonce, "expires_at": now + nonce_ttl, "now": now}
                    ),
                )
                # A row comes back only when the nonce was new or its TTL had passed.
                if cursor.fetchone() is None:
                    raise Replayed()
            for e in events:
                cursor.execute(
                    statements.event.sql,
                    statements.event.params({**_event_row(e), "received_at": now}),
                )
            if hangup is None:
                return False
            cursor.execute(
                statements.hangup.sql, statements.hangup.params(_hangup_row(hangup, now))
            )
            return bool(statements.waiting.run(cursor, {"call_uuid": hangup.call_uuid}))

        # One transaction: the nonce is spent exactly when the rows are stored (committed
        # before this returns, so before the callback is answered).
        waiting = self._run_cursor(write)
        self._maybe_purge()
        return waiting

    def _record_at_once(
        self,
        statements: _Statements,
        now: datetime,
        nonce: str,
        nonce_ttl: timedelta,
        events: Sequence[CallEvent],
        hangup: Hangup | None,
    ) -> bool:
        """PostgreSQL, one event at most: `record` as one statement, one round trip, committed
        when it returns."""
        statement = statements.together[bool(events), hangup is not None]
        values: dict[str, Any] = {"nonce": nonce, "expires_at": now + nonce_ttl, "now": now}
        for e in events:
            values.update(("e_" + k, v) for k, v in _event_row(e).items())
            values["e_received_at"] = now
        if hangup is not None:
            values.update(("h_" + k, v) for k, v in _hangup_row(hangup, now).items())

        def write(cursor: Any) -> bool:
            (answer,) = statement.run(cursor, values)
            if answer["claimed"] == 0:
                raise Replayed()  # the nonce is live: the statement wrote nothing
            return bool(answer.get("waiting"))

        return self._run_cursor(write, one_statement=True)

    def _maybe_purge(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self._purge_every.total_seconds()
        try:
            self.purge_nonces()
        except StoreUnavailable:
            log.warning("could not purge expired nonces; will retry")

    def purge_nonces(self) -> int:
        """Delete expired nonces; return how many went."""

        def purge(conn: Connection) -> int:
            return conn.execute(delete(nonces).where(nonces.c.expires_at < self._clock())).rowcount

        return self._run(purge)

    def count_rejection(self, route: str, reason: str) -> datetime:
        """Add one refused callback to its minute's count; return the minute (raises
        StoreUnavailable)."""
        now = self._clock()
        minute = now.replace(second=0, microsecond=0)
        upsert = self._insert()(signature_rejections).values(
            minute=minute, route=route[:32], reason=reason[:128], count=1
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=["minute", "route", "reason"],
            set_={"count": signature_rejections.c["count"] + 1},
        )
        self._run(lambda conn: conn.execute(upsert))
        return minute

    def purge_events(self, older_than: timedelta) -> dict[str, int]:
        """Delete call events, hangups, rejection counts, alerts and handoffs older than
        `older_than`.

        Handoffs go with their attempts (their summaries are personal data), and so do the
        outbox's delivered or given-up webhooks; one still waiting for delivery stays until it
        is delivered or given up.
        """
        cutoff = self._clock() - older_than
        old_handoffs = select(handoffs.c.id).where(handoffs.c.created_at < cutoff)

        def purge(conn: Connection) -> dict[str, int]:
            return {
                "call_events": conn.execute(
                    delete(call_events).where(call_events.c.received_at < cutoff)
                ).rowcount,
                "hangups": conn.execute(
                    delete(hangups).where(hangups.c.received_at < cutoff)
                ).rowcount,
                # A minute's count goes only once the whole minute is past the cutoff.
                "signature_rejections": conn.execute(
                    delete(signature_rejections).where(
                        signature_rejections.c.minute <= cutoff - timedelta(minutes=1)
                    )
                ).rowcount,
                "alerts": conn.execute(delete(alerts).where(alerts.c.raised_at < cutoff)).rowcount,
                "handoff_attempts": conn.execute(
                    delete(handoff_attempts).where(handoff_attempts.c.handoff_id.in_(old_handoffs))
                ).rowcount,
                "handoffs": conn.execute(
                    delete(handoffs).where(handoffs.c.created_at < cutoff)
                ).rowcount,
                "webhook_outbox": conn.execute(
                    delete(webhook_outbox).where(
                        webhook_outbox.c.created_at < cutoff,
                        or_(
                            webhook_outbox.c.delivered_at.is_not(None),
                            webhook_outbox.c.gave_up_at.is_not(None),
                        ),
                    )
                ).rowcount,
            }

        return self._run(purge)
