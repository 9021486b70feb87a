"""Handoffs the AI asked for: their idempotency, their states, their agent attempts.

The database's unique indexes decide the two conflicts, never a read before the write, so two
instances sharing PostgreSQL agree: the same API key and Idempotency-Key give back the first
handoff (a different request body under that key is a conflict), and a call has at most one
live handoff. A state change and the webhook reporting it are written in one transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select, update

from sipguard.errors import (
    HandoffConflict,
    IdempotencyMismatch,
    UnknownHandoff,
    ValidationError,
)
from sipguard.store.api_keys import random_id
from sipguard.store.database import Database
from sipguard.store.outbox import enqueue
from sipguard.store.schema import (
    LIVE,
    LIVE_STATES,
    api_keys,
    handoff_attempts,
    handoffs,
    state_in,
)

ID_PREFIX = "ho_"
ID_LENGTH = 22
STATES = (*LIVE_STATES, "failed", "returned", "caller_hung_up")
EVENTS = (
    "handoff.transferred",
    "handoff.agent_answered",
    "handoff.failed",
    "handoff.returned",
    "handoff.caller_hung_up",
)
ON_FAILURE = ("return", "fallback")
# How an attempt ended; `caller_hung_up` is the caller leaving while the agents rang.
OUTCOMES = (
    "answered",
    "no-answer",
    "busy",
    "sip_auth_failed",
    "sip_auth_timeout",
    "failed",
    "caller_hung_up",
)
# Live states in which no agent has taken the call yet: the caller leaving ends the handoff.
WAITING_STATES = tuple(state for state in LIVE_STATES if state != "connected")
WAITING = state_in(WAITING_STATES)
# A handoff rings from transferred; start_attempt moves one still requested there first.
RINGING_FROM = ("transferred",)
_INSERT_TRIES = 3  # a conflicting row can end between the insert and the look-up


def waiting_handoff(call_uuid: Any) -> Select[Any]:
    """The call's live handoff that no agent took yet, if any (`call_uuid`: a bind or a value).

    The hangup's look-up, on the live-handoff index: the caller leaving ends that handoff.
    """
    return select(handoffs.c.id).where(handoffs.c.call_uuid == call_uuid, LIVE, WAITING)


def _bounded(request: HandoffRequest) -> tuple[tuple[str, str | None, int], ...]:
    return (
        ("call_uuid", request.call_uuid, 64),
        ("group", request.group_name, 64),
        ("Idempotency-Key", request.idempotency_key, 255),
    )


def request_hash(document: Mapping[str, Any]) -> str:
    """Return the hex sha256 of a request's JSON, key order and spacing aside."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class HandoffRequest:
    """What the AI asked for, checked at the edge; `summary` is personal data."""

    api_key_id: str
    call_uuid: str
    group_name: str
    request_hash: str
    idempotency_key: str | None = None
    summary: str | None = field(default=None, repr=False)
    fields: Mapping[str, str] = field(default_factory=dict)
    whisper: bool = False
    on_failure: str = "fallback"
    return_url: str | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One Dial of a handoff: the agents it rang and how it ended."""

    attempt: int
    agents: tuple[str, ...]
    outcome: str | None
    code: int | None
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class Handoff:
    """A stored handoff with its attempts; the summary stays out of its repr."""

    id: str
    api_key_id: str
    idempotency_key: str | None
    call_uuid: str
    group_name: str
    summary: str | None = field(repr=False)
    fields: Mapping[str, str]
    whisper: bool
    on_failure: str
    return_url: str | None
    callback_url: str | None
    state: str
    plivo_api_id: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    attempts: tuple[Attempt, ...] = ()

    @property
    def live(self) -> bool:
        """Tell whether the call is still being handed over."""
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class Created:
    """A create's answer: the handoff, and whether it is the first answer given again."""

    handoff: Handoff
    replayed: bool


@dataclass(frozen=True)
class Transition:
    """A state change's answer: the handoff now, and the webhook-id of the event it queued."""

    handoff: Handoff
    event_id: str | None


def _handoff(row: Any, attempts: Sequence[Attempt] = ()) -> Handoff:
    return Handoff(
        id=row.id,
        api_key_id=row.api_key_id,
        idempotency_key=row.idempotency_key,
        call_uuid=row.call_uuid,
        group_name=row.group_name,
        summary=row.summary,
        fields=json.loads(row.fields),
        whisper=bool(row.whisper),
        on_failure=row.on_failure,
        return_url=row.return_url,
        callback_url=row.callback_url,
        state=row.state,
        plivo_api_id=row.plivo_api_id,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        attempts=tuple(attempts),
    )


def _attempts(conn: Connection, ids: Collection[str]) -> dict[str, list[Attempt]]:
    found: dict[str, list[Attempt]] = {handoff_id: [] for handoff_id in ids}
    if not ids:
        return found
    query = (
        select(handoff_attempts)
        .where(handoff_attempts.c.handoff_id.in_(list(ids)))
        .order_by(handoff_attempts.c.handoff_id, handoff_attempts.c.attempt)
    )
    for row in conn.execute(query):
        found[row.handoff_id].append(
            Attempt(
                attempt=row.attempt,
                agents=tuple(json.loads(row.agents)),
                outcome=row.outcome,
                code=row.code,
                started_at=row.started_at,
                ended_at=row.ended_at,
            )
        )
    return found


def _load(conn: Connection, handoff_id: str) -> Handoff | None:
    row = conn.execute(select(handoffs).where(handoffs.c.id == handoff_id[:32])).first()
    if row is None:
        return None
    return _handoff(row, _attempts(conn, [row.id])[row.id])


def _replay(conn: Connection, request: HandoffRequest) -> Handoff | None:
    """Find the handoff stored first under `request`'s key; refuse one for another body."""
    if request.idempotency_key is None:
        return None
    first = conn.execute(
        select(handoffs).where(
            handoffs.c.api_key_id == request.api_key_id,
            handoffs.c.idempotency_key == request.idempotency_key,
        )
    ).first()
    if first is None:
        return None
    if not hmac.compare_digest(first.request_hash, request.request_hash):
        raise IdempotencyMismatch("Idempotency-Key was already used with a different request")
    return _handoff(first, _attempts(conn, [first.id])[first.id])


def _accepted(conn: Connection, handoff_id: str, now: datetime) -> None:
    """Move a handoff still `requested` to `transferred` and queue `handoff.transferred`: Plivo
    has called back about the transferred call, so it took the Transfer whether or not the API
    has recorded its answer yet (the API's own move from `requested` then finds nothing to do,
    and the webhooks keep their order). Plivo's api_id is not known here: the event says null."""
    statement = (
        update(handoffs)
        .where(handoffs.c.id == handoff_id[:32], handoffs.c.state == "requested")
        .values(state="transferred", updated_at=now)
        .returning(*handoffs.c)
    )
    row = conn.execute(statement).first()
    if row is not None:
        _queue(conn, row, now, "handoff.transferred", {"plivo_api_id": None})


def _queue(
    conn: Connection,
    row: Any,
    now: datetime,
    event_type: str,
    data: Mapping[str, Any] | None,
) -> str | None:
    """Queue `event_type` for the handoff `row` now is in; None when nobody is to be told."""
    url = (
        row.callback_url
        or conn.execute(
            select(api_keys.c.callback_url).where(api_keys.c.id == row.api_key_id)
        ).scalar_one_or_none()
    )
    if not url:
        return None
    return enqueue(
        conn,
        now=now,
        api_key_id=row.api_key_id,
        handoff_id=row.id,
        url=url,
        event_type=event_type,
        data={
            "handoff_id": row.id,
            "call_uuid": row.call_uuid,
            "group": row.group_name,
            "state": row.state,
            **(data or {}),
        },
    )


class Handoffs(Database):
    """Create handoffs idempotently, move them through their states, record their attempts."""

    def create_handoff(self, request: HandoffRequest) -> Created:
        """Store a new handoff in state `requested`, or give back the first one for its key.

        Raises IdempotencyMismatch (422) when the Idempotency-Key came with another request,
        HandoffConflict (409) when the call has a live handoff already.
        """
        if request.on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {ON_FAILURE}")
        for name, value, limit in _bounded(request):
            # Bounded here too: PostgreSQL would refuse a longer value as a database error (503).
            if value is not None and not 0 < len(value) <= limit:
                raise ValidationError(name, f"must be 1-{limit} characters")
        now = self._clock()
        row = {
            "api_key_id": request.api_key_id,
            "idempotency_key": request.idempotency_key,
            "request_hash": request.request_hash,
            "call_uuid": request.call_uuid,
            "group_name": request.group_name,
            "summary": request.summary,
            "fields": json.dumps(dict(request.fields), separators=(",", ":")),
            "whisper": request.whisper,
            "on_failure": request.on_failure,
            "return_url": request.return_url,
            "callback_url": request.callback_url,
            "state": "requested",
            "created_at": now,
            "updated_at": now,
        }
        insert_ = self._insert()

        def write(conn: Connection) -> Created:
            for _ in range(_INSERT_TRIES):
                # No conflict target: any unique index that refuses the row makes it a no-op,
                # and PostgreSQL waits for a concurrent insert of the same key to commit first.
                statement = (
                    insert_(handoffs)
                    .values(id=random_id(ID_PREFIX, ID_LENGTH), **row)
                    .on_conflict_do_nothing()
                    .returning(*handoffs.c)
                )
                inserted = conn.execute(statement).first()
                if inserted is not None:
                    return Created(_handoff(inserted), replayed=False)
                replay = _replay(conn, request)
                if replay is not None:
                    return Created(replay, replayed=True)
                live = conn.execute(
                    select(handoffs.c.id).where(
                        handoffs.c.call_uuid == request.call_uuid,
                        LIVE,
                    )
                ).first()
                if live is not None:
                    raise HandoffConflict(
                        f"call {request.call_uuid} is being handed off already ({live.id})"
                    )
            raise HandoffConflict(f"call {request.call_uuid} is being handed off already")

        return self._run(write)

    def replayed_handoff(self, request: HandoffRequest) -> Handoff | None:
        """Return the handoff first stored for `request`'s Idempotency-Key, or None (no key, or
        none stored yet); IdempotencyMismatch (422) when the key came with another request."""
        return self._run(lambda conn: _replay(conn, request), write=False)

    def get_handoff(self, handoff_id: str) -> Handoff | None:
        """Return a handoff with its attempts, or None."""
        return self._run(lambda conn: _load(conn, handoff_id), write=False)

    def recent_handoffs(self, limit: int = 50, since: datetime | None = None) -> list[Handoff]:
        """Return the newest handoffs first, with their attempts (for /monitor)."""
        query = select(handoffs).order_by(handoffs.c.created_at.desc(), handoffs.c.id).limit(limit)
        if since is not None:
            query = query.where(handoffs.c.created_at >= since)

        def read(conn: Connection) -> list[Handoff]:
            rows = conn.execute(query).all()
            attempts = _attempts(conn, [row.id for row in rows])
            return [_handoff(row, attempts[row.id]) for row in rows]

        return self._run(read, write=False)

    def transition(
        self,
        handoff_id: str,
        state: str,
        event_type: str | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        from_states: Collection[str] | None = None,
        plivo_api_id: str | None = None,
        error: str | None = None,
        transferred: bool = False,
    ) -> Transition | None:
        """Move a handoff to `state` and queue `event_type`'s webhook in the same transaction.

        The event goes to the handoff's callback URL, else its key's; with neither, none is
        queued. With `from_states`, only a handoff in one of them moves (None is returned when
        it is in another): concurrent callbacks cannot move a finished handoff back. Raises
        UnknownHandoff when there is no such handoff.

        `transferred` says the change comes from Plivo's callbacks for the transferred call,
        proof that Plivo accepted the Transfer: a handoff still `requested` (Plivo was faster
        than the API's own record of its answer) first becomes `transferred` with its webhook.
        """
        if state not in STATES:
            raise ValueError(f"unknown handoff state {state!r}")
        if event_type is not None and event_type not in EVENTS:
            raise ValueError(f"unknown handoff event {event_type!r}")
        now = self._clock()
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if plivo_api_id is not None:
            values["plivo_api_id"] = plivo_api_id[:64]
        if error is not None:
            values["error"] = error
        statement = update(handoffs).where(handoffs.c.id == handoff_id[:32])
        if from_states is not None:
            statement = statement.where(handoffs.c.state.in_(list(from_states)))
        statement = statement.values(**values).returning(*handoffs.c)

        def write(conn: Connection) -> Transition | None:
            if transferred:
                _accepted(conn, handoff_id, now)
            row = conn.execute(statement).first()
            if row is None:
                if _load(conn, handoff_id) is None:
                    raise UnknownHandoff(f"no handoff {handoff_id}")
                return None
            event_id = _queue(conn, row, now, event_type, data) if event_type else None
            return Transition(_handoff(row, _attempts(conn, [row.id])[row.id]), event_id)

        return self._run(write)

    def note_plivo_api_id(self, handoff_id: str, plivo_api_id: str | None) -> Handoff | None:
        """Keep Plivo's api_id for a handoff that moved on before the API recorded Plivo's
        answer (the first one recorded stays); return the handoff as it is now."""
        statement = (
            update(handoffs)
            .where(handoffs.c.id == handoff_id[:32], handoffs.c.plivo_api_id.is_(None))
            .values(plivo_api_id=plivo_api_id[:64] if plivo_api_id else None)
        )

        def write(conn: Connection) -> Handoff | None:
            if plivo_api_id:
                conn.execute(statement)
            return _load(conn, handoff_id)

        return self._run(write)

    def end_for_call(self, call_uuid: str, state: str, event_type: str) -> str | None:
        """Move the call's live handoff that no agent took yet to `state`, queueing `event_type`.

        For the hangup callback, once its record said the call has one (`Store.record`): most
        calls have none and cost no more than that. Returns the handoff's id, or None when the
        call has no such handoff (or it moved already: the update is conditional on the states).
        """
        if state not in STATES or event_type not in EVENTS:
            raise ValueError(f"unknown handoff state or event {state!r}, {event_type!r}")
        now = self._clock()
        statement = (
            update(handoffs)
            .where(
                handoffs.c.call_uuid == call_uuid[:64],
                LIVE,
                WAITING,
            )
            .values(state=state, updated_at=now)
            .returning(*handoffs.c)
        )

        def write(conn: Connection) -> str | None:
            row = conn.execute(statement).first()
            if row is None:
                return None
            _queue(conn, row, now, event_type, None)
            return str(row.id)

        return self._run(write)

    def start_attempt(
        self, handoff_id: str, attempt: int, agents: Sequence[str], *, ringing: bool = False
    ) -> None:
        """Record that attempt `attempt` rings `agents` (a retried callback changes nothing).

        With `ringing` (Plivo is ringing the handoff's agents, so it accepted the Transfer), a
        handoff still `requested` first becomes `transferred` with its webhook, then a
        `transferred` one moves to `ringing` (no webhook reports that), in one transaction.
        """
        ring = (
            update(handoffs)
            .where(handoffs.c.id == handoff_id, handoffs.c.state.in_(RINGING_FROM))
            .values(state="ringing", updated_at=self._clock())
        )
        statement = (
            self._insert()(handoff_attempts)
            .values(
                handoff_id=handoff_id,
                attempt=attempt,
                agents=json.dumps(list(agents)),
                started_at=self._clock(),
            )
            .on_conflict_do_nothing()
        )

        def write(conn: Connection) -> None:
            conn.execute(statement)
            if ringing:
                _accepted(conn, handoff_id, self._clock())
                conn.execute(ring)

        self._run(write)

    def end_attempt(
        self, handoff_id: str, attempt: int, outcome: str, code: int | None = None
    ) -> bool:
        """Record how an attempt ended; False when it was never started or has ended already."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown attempt outcome {outcome!r}")
        statement = (
            update(handoff_attempts)
            .where(
                handoff_attempts.c.handoff_id == handoff_id,
                handoff_attempts.c.attempt == attempt,
                handoff_attempts.c.ended_at.is_(None),
            )
            .values(outcome=outcome, code=code, ended_at=self._clock())
        )
        return bool(self._run(lambda conn: conn.execute(statement).rowcount))
