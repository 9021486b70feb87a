"""store.Store on SQLite and on a real PostgreSQL: nonces, events, hangups, schema, outages.

Time never passes for real here: every Store gets a FakeClock that the test moves by hand.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Table, func, select, text
from sqlalchemy.engine import make_url

from sipguard.calls.forms import MAX_CALL_UUID_LENGTH, MAX_FIELD_LENGTH, Hangup
from sipguard.errors import SignatureError, StoreUnavailable
from sipguard.store import (
    CallEvent,
    Replayed,
    Store,
    call_events,
    database,
    hangups,
    metadata,
    nonces,
    normalise_url,
)
from tests.support.queries import schema_is_current, stored_events, stored_hangup

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456)
TTL = timedelta(seconds=300)
MICROSECOND = timedelta(microseconds=1)
UNREACHABLE_URL = "postgresql://postgres@127.0.0.1:1/nope"  # nothing listens on port 1


class FakeClock:
    """A clock that returns naive UTC datetimes and only moves when told to."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def set(self, when: datetime) -> None:
        self.now = when


OpenStore = Callable[..., Store]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_store() -> Iterator[OpenStore]:
    """Open Stores that are disposed after the test (PostgreSQL drops the database then)."""
    opened: list[Store] = []

    def _open(url: str, **kwargs: Any) -> Store:
        store = Store(url, **kwargs)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.dispose()


@pytest.fixture
def store(database_url: str, clock: FakeClock, open_store: OpenStore) -> Store:
    """A migrated Store on the parametrised backend, on the fake clock."""
    opened = open_store(database_url, clock=clock, purge_every=timedelta(hours=1))
    opened.upgrade()
    return opened


def _event(call_uuid: str, route: str | None = "answer", **fields: Any) -> CallEvent:
    """A CallEvent with every field set (so a column dropped on the way in is noticed).

    route=None builds an event the schema rejects (route is NOT NULL), for failure tests.
    """
    values: dict[str, Any] = {
        "route": route,
        "call_uuid": call_uuid,
        "decision": "dial:support",
        "rule": "credential-ok",
        "reason": "sip-auth passed",
        "from_number": "sip:alice@203.0.113.10",
        "to_number": "sip:12345678901234567890@app.plivo.com",
        "sip_auth_type": "credential",
        "sip_auth_user": "alice",
        "sip_source_ip": "203.0.113.10",
        "group_name": "support",
        "attempt": 1,
        "dial_status": "completed",
        "dial_hangup_cause": "NORMAL_CLEARING",
        "auth_failure": "sip_auth_failed",
        "a_leg_uuid": "a-leg-0001",
        "b_leg_uuid": "b-leg-0001",
    }
    values.update(fields)
    return CallEvent(**values)


def _hangup_form(call_uuid: str, **fields: str) -> dict[str, str]:
    form = {
        "CallUUID": call_uuid,
        "CallStatus": "completed",
        "Direction": "inbound",
        "From": "sip:alice@203.0.113.10",
        "To": "sip:12345678901234567890@app.plivo.com",
        "HangupCause": "NORMAL_CLEARING",
        "HangupCauseName": "Normal Hangup",
        "HangupCauseCode": "4000",
        "HangupSource": "Caller",
        "Duration": "42",
        "BillDuration": "60",
        "SIPAuthType": "credential",
        "SIPAuthUser": "alice",
        "SIPSourceIP": "203.0.113.10",
    }
    form.update(fields)
    return form


def _count(store: Store, table: Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _nonce_rows(store: Store) -> dict[str, datetime]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(nonces.c.nonce, nonces.c.expires_at)).all())


# --- 1. nonces: claimed once within the TTL ----------------------------------------------


def test_nonce_is_claimed_once_and_a_replay_writes_nothing(store: Store, clock: FakeClock) -> None:
    store.record(nonce="nonce-1", nonce_ttl=TTL, events=[_event("call-1")])
    assert _nonce_rows(store) == {"nonce-1": T0 + TTL}

    clock.advance(TTL - timedelta(seconds=1))
    replay_hangup = Hangup.from_form(_hangup_form("call-replayed"))
    with pytest.raises(Replayed) as excinfo:
        store.record(
            nonce="nonce-1",
            nonce_ttl=TTL,
            events=[_event("call-replayed")],
            hangup=replay_hangup,
        )

    assert isinstance(excinfo.value, SignatureError)
    assert str(excinfo.value) == "replayed"
    assert excinfo.value.message == "replayed"
    assert excinfo.value.status == 403
    # Nothing the replayed call carried was stored, and its TTL was not extended.
    assert stored_events(store, "call-replayed") == []
    assert stored_hangup(store, "call-replayed") is None
    assert [e["call_uuid"] for e in stored_events(store)] == ["call-1"]
    assert _count(store, hangups) == 0
    assert _nonce_rows(store) == {"nonce-1": T0 + TTL}


def test_other_nonces_are_independent(store: Store) -> None:
    store.record(nonce="nonce-a", nonce_ttl=TTL, events=[_event("call-a")])
    store.record(nonce="nonce-b", nonce_ttl=TTL, events=[_event("call-b")])
    with pytest.raises(Replayed):
        store.record(nonce="nonce-a", nonce_ttl=TTL)
    with pytest.raises(Replayed):
        store.record(nonce="nonce-b", nonce_ttl=TTL)
    assert [e["call_uuid"] for e in stored_events(store)] == ["call-a", "call-b"]


def test_nonce_is_still_live_exactly_at_expires_at(store: Store, clock: FakeClock) -> None:
    """The code re-claims only when `expires_at < now`: at now == expires_at it is a replay.

    purge_nonces uses the same strict comparison, so a nonce that still blocks a claim is
    never purged (tested below).
    """
    store.record(nonce="nonce-edge", nonce_ttl=TTL)
    clock.set(T0 + TTL)
    with pytest.raises(Replayed):
        store.record(nonce="nonce-edge", nonce_ttl=TTL, events=[_event("call-edge")])
    assert stored_events(store, "call-edge") == []
    assert _nonce_rows(store) == {"nonce-edge": T0 + TTL}


def test_nonce_is_accepted_again_after_its_ttl_with_a_new_ttl(
    store: Store, clock: FakeClock
) -> None:
    store.record(nonce="nonce-1", nonce_ttl=TTL, events=[_event("call-first")])
    clock.set(T0 + TTL + MICROSECOND)  # one tick past expires_at

    again = Hangup.from_form(_hangup_form("call-again"))
    store.record(nonce="nonce-1", nonce_ttl=TTL, events=[_event("call-again")], hangup=again)

    assert [e["call_uuid"] for e in stored_events(store)] == ["call-first", "call-again"]
    assert stored_hangup(store, "call-again") is not None
    assert _nonce_rows(store) == {"nonce-1": T0 + TTL + MICROSECOND + TTL}
    # The re-claim starts a fresh TTL: a replay right after is refused again.
    clock.advance(TTL)
    with pytest.raises(Replayed):
        store.record(nonce="nonce-1", nonce_ttl=TTL, events=[_event("call-third")])
    assert stored_events(store, "call-third") == []


def test_record_without_a_nonce_claims_nothing(store: Store) -> None:
    store.record(nonce=None, nonce_ttl=TTL, events=[_event("call-1")])
    store.record(nonce=None, nonce_ttl=TTL, events=[_event("call-1")])
    assert len(stored_events(store, "call-1")) == 2
    assert _nonce_rows(store) == {}


# --- 2. atomicity: a failed write spends no nonce -------------------------------------------


def _chain_text(exc: BaseException, walked: bool = False) -> str:
    """What a log line with exc_info would show of the error and every error it chains."""
    messages = []
    current: BaseException | None = exc
    while current is not None:
        messages.extend(traceback.format_exception_only(current))
        current = current.__cause__ or current.__context__
    assert (len(messages) > 1) == walked  # a StoreUnavailable chains no driver error
    return "".join(messages)


def _assert_not_in_message(exc: StoreUnavailable, *values: str) -> None:
    for value in values:
        assert value not in str(exc)
        assert value not in exc.message


def test_failed_event_insert_rolls_back_and_leaves_the_nonce_unspent(store: Store) -> None:
    broken = _event("call-broken", route=None)  # route is NOT NULL on both backends
    with pytest.raises(StoreUnavailable) as excinfo:
        store.record(nonce="nonce-secret-1", nonce_ttl=TTL, events=[broken])

    assert excinfo.value.status == 503
    assert "IntegrityError" in str(excinfo.value)
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None
    _assert_not_in_message(excinfo.value, "nonce-secret-1", "call-broken", "alice")
    assert "nonce-secret-1" not in _chain_text(excinfo.value, walked=False)
    assert _nonce_rows(store) == {}
    assert stored_events(store) == []

    # Plivo retries with the same nonce: it must go through now.
    store.record(nonce="nonce-secret-1", nonce_ttl=TTL, events=[_event("call-broken")])
    assert [e["call_uuid"] for e in stored_events(store)] == ["call-broken"]
    with pytest.raises(Replayed):
        store.record(nonce="nonce-secret-1", nonce_ttl=TTL)


def test_failed_hangup_insert_also_rolls_back_events_written_before_it(store: Store) -> None:
    good = Hangup.from_form(_hangup_form("call-h"))
    # The primary key is NOT NULL on both backends (Any: the dataclass says str).
    broken = replace(good, call_uuid=cast(Any, None))
    with pytest.raises(StoreUnavailable):
        store.record(nonce="nonce-h", nonce_ttl=TTL, events=[_event("call-h")], hangup=broken)
    assert stored_events(store) == []
    assert _count(store, hangups) == 0
    assert _nonce_rows(store) == {}

    store.record(nonce="nonce-h", nonce_ttl=TTL, events=[_event("call-h")], hangup=good)
    assert len(stored_events(store, "call-h")) == 1
    assert stored_hangup(store, "call-h") is not None


@pytest.mark.postgres
def test_postgres_length_violation_rolls_back_and_leaves_the_nonce_unspent(
    postgres_url: str, clock: FakeClock, open_store: OpenStore
) -> None:
    store = open_store(postgres_url, clock=clock)
    store.upgrade()
    too_long = "u" * 65  # call_events.call_uuid is VARCHAR(64); PostgreSQL enforces it
    with pytest.raises(StoreUnavailable) as excinfo:
        store.record(
            nonce="nonce-secret-2",
            nonce_ttl=TTL,
            events=[_event("call-ok"), _event(too_long)],
        )
    assert "DataError" in str(excinfo.value)
    _assert_not_in_message(excinfo.value, "nonce-secret-2", too_long, "call-ok")
    assert "nonce-secret-2" not in _chain_text(excinfo.value)
    assert too_long not in _chain_text(excinfo.value)
    assert stored_events(store) == []  # the valid first row went too
    assert _nonce_rows(store) == {}

    store.record(nonce="nonce-secret-2", nonce_ttl=TTL, events=[_event("call-ok")])
    assert [e["call_uuid"] for e in stored_events(store)] == ["call-ok"]


@pytest.mark.postgres
def test_postgres_constraint_error_chain_does_not_carry_row_values(
    postgres_url: str, clock: FakeClock, open_store: OpenStore
) -> None:
    store = open_store(postgres_url, clock=clock)
    store.upgrade()
    broken = _event("call-broken", route=None, sip_auth_user="secret-user-value")
    with pytest.raises(StoreUnavailable) as excinfo:
        store.record(nonce="nonce-1", nonce_ttl=TTL, events=[broken])
    assert "secret-user-value" not in _chain_text(excinfo.value)


# --- 3. hangups: idempotent on CallUUID ----------------------------------------------------


def test_hangup_is_stored_with_all_fields(store: Store) -> None:
    store.record(nonce="n-1", nonce_ttl=TTL, hangup=Hangup.from_form(_hangup_form("h-1")))
    assert stored_hangup(store, "h-1") == {
        "call_uuid": "h-1",
        "received_at": T0,
        "call_status": "completed",
        "direction": "inbound",
        "from_number": "sip:alice@203.0.113.10",
        "to_number": "sip:12345678901234567890@app.plivo.com",
        "hangup_cause": "NORMAL_CLEARING",
        "hangup_cause_name": "Normal Hangup",
        "hangup_cause_code": 4000,
        "hangup_source": "Caller",
        "duration": 42,
        "bill_duration": 60,
        "sip_auth_type": "credential",
        "sip_auth_user": "alice",
        "sip_source_ip": "203.0.113.10",
        "auth_failure": None,
    }
    assert stored_hangup(store, "h-unknown") is None


def test_hangup_is_idempotent_on_call_uuid_and_the_first_write_wins(
    store: Store, clock: FakeClock
) -> None:
    first = Hangup.from_form(_hangup_form("h-1", CallStatus="completed", Duration="42"))
    store.record(nonce="n-1", nonce_ttl=TTL, hangup=first)

    clock.advance(timedelta(seconds=30))
    retry = Hangup.from_form(_hangup_form("h-1", CallStatus="failed", Duration="99"))
    # A retry (new nonce) succeeds: its nonce and events are stored, its hangup is ignored.
    store.record(nonce="n-2", nonce_ttl=TTL, hangup=retry, events=[_event("h-1")])

    assert _count(store, hangups) == 1
    row = stored_hangup(store, "h-1")
    assert row is not None
    assert (row["call_status"], row["duration"], row["received_at"]) == ("completed", 42, T0)
    assert len(stored_events(store, "h-1")) == 1
    assert set(_nonce_rows(store)) == {"n-1", "n-2"}


AUTH_FAILURE_CASES = [
    ({"HangupCauseName": "sip_auth_failed", "HangupCauseCode": ""}, "sip_auth_failed"),
    ({"HangupCauseName": "", "HangupCauseCode": "4210"}, "sip_auth_failed"),
    ({"HangupCauseName": "", "HangupCauseCode": "4240"}, "sip_auth_failed"),
    ({"HangupCauseName": "", "HangupCauseCode": "4250"}, "sip_auth_timeout"),
    ({"HangupCauseName": "sip_auth_timeout", "HangupCauseCode": ""}, "sip_auth_timeout"),
    ({"HangupCauseName": "", "PlivoHangupCause": "sip_auth_failed"}, "sip_auth_failed"),
    ({"HangupCauseName": "Normal Hangup", "HangupCauseCode": "4000"}, None),
    ({"HangupCauseName": "", "HangupCauseCode": ""}, None),
]


def test_hangup_auth_failure_column_is_derived_from_cause(store: Store) -> None:
    expected = {}
    for index, (fields, cause) in enumerate(AUTH_FAILURE_CASES):
        call_uuid = f"h-auth-{index}"
        form = _hangup_form(call_uuid, HangupCause="", **fields)
        store.record(nonce=f"n-{index}", nonce_ttl=TTL, hangup=Hangup.from_form(form))
        expected[call_uuid] = cause

    stored = {}
    for call_uuid in expected:
        row = stored_hangup(store, call_uuid)
        assert row is not None
        stored[call_uuid] = row["auth_failure"]
    assert stored == expected


def test_hangup_that_from_form_accepts_is_storable_on_every_backend(store: Store) -> None:
    """Every field at the longest length Hangup.from_form accepts is stored on both backends,
    never a permanent "database unavailable" (503 forever) on one of them.
    """
    longest = "d" * MAX_FIELD_LENGTH
    text_fields = (
        "CallStatus",
        "Direction",
        "From",
        "To",
        "HangupCause",
        "HangupCauseName",
        "HangupSource",
        "SIPAuthType",
        "SIPAuthUser",
        "SIPSourceIP",
    )
    hangup = Hangup.from_form(
        {"CallUUID": "h" * MAX_CALL_UUID_LENGTH, **{name: longest for name in text_fields}}
    )
    store.record(nonce="n-long", nonce_ttl=TTL, hangup=hangup)
    row = stored_hangup(store, "h" * MAX_CALL_UUID_LENGTH)
    assert row is not None
    assert row["direction"] == longest and row["sip_source_ip"] == longest


# --- 4. events -----------------------------------------------------------------------------


def test_events_are_stored_with_all_fields_and_the_clock_time(
    store: Store, clock: FakeClock
) -> None:
    answer = _event("call-a", route="answer")
    dial = _event(
        "call-a",
        route="dial_action",
        decision="fallback:voicemail",
        attempt=2,
        dial_status="busy",
        auth_failure=None,
    )
    other = _event("call-b", route="handoff", decision="dial:sales", group_name="sales")
    assert all(value is not None for value in asdict(answer).values())

    store.record(nonce="n-1", nonce_ttl=TTL, events=[answer])
    clock.advance(timedelta(seconds=5))
    store.record(nonce="n-2", nonce_ttl=TTL, events=[dial, other])

    rows = stored_events(store, "call-a")
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    without_ids = [{k: v for k, v in row.items() if k != "id"} for row in rows]
    assert without_ids == [
        {**asdict(answer), "received_at": T0},
        {**asdict(dial), "received_at": T0 + timedelta(seconds=5)},
    ]
    assert set(rows[0]) == {c.name for c in call_events.columns}

    [row_b] = stored_events(store, "call-b")
    assert {k: v for k, v in row_b.items() if k != "id"} == {
        **asdict(other),
        "received_at": T0 + timedelta(seconds=5),
    }
    assert [(e["call_uuid"], e["route"]) for e in stored_events(store)] == [
        ("call-a", "answer"),
        ("call-a", "dial_action"),
        ("call-b", "handoff"),
    ]
    assert stored_events(store, "call-nobody") == []


def test_event_with_only_required_fields_stores_nulls(store: Store) -> None:
    store.record(
        nonce="n-1",
        nonce_ttl=TTL,
        events=[CallEvent(route="answer", call_uuid="call-min", decision="reject")],
    )
    [row] = stored_events(store, "call-min")
    assert row["received_at"] == T0
    assert (row["route"], row["decision"]) == ("answer", "reject")
    optional = set(row) - {"id", "received_at", "call_uuid", "route", "decision"}
    assert optional and all(row[name] is None for name in optional)


# --- 5. purging nonces ---------------------------------------------------------------------


def test_purge_nonces_deletes_only_expired_nonces(store: Store, clock: FakeClock) -> None:
    short, long_ = timedelta(seconds=10), timedelta(seconds=60)
    store.record(nonce="short-1", nonce_ttl=short)
    store.record(nonce="short-2", nonce_ttl=short)
    store.record(nonce="long-1", nonce_ttl=long_)
    assert store.purge_nonces() == 0

    clock.set(T0 + short)  # exactly at expires_at: still live, so not purged
    assert store.purge_nonces() == 0
    assert set(_nonce_rows(store)) == {"short-1", "short-2", "long-1"}

    clock.advance(MICROSECOND)
    assert store.purge_nonces() == 2
    assert set(_nonce_rows(store)) == {"long-1"}
    assert store.purge_nonces() == 0
    with pytest.raises(Replayed):
        store.record(nonce="long-1", nonce_ttl=TTL)

    clock.set(T0 + long_ + MICROSECOND)
    assert store.purge_nonces() == 1
    assert _nonce_rows(store) == {}


def test_record_purges_expired_nonces_on_its_own(
    database_url: str, clock: FakeClock, open_store: OpenStore
) -> None:
    store = open_store(database_url, clock=clock, purge_every=timedelta(0))
    store.upgrade()
    store.record(nonce="old", nonce_ttl=timedelta(seconds=10))
    clock.advance(timedelta(seconds=11))
    store.record(nonce="new", nonce_ttl=timedelta(seconds=10))
    assert set(_nonce_rows(store)) == {"new"}


# --- 6. concurrency: two app instances sharing PostgreSQL ----------------------------------

THREADS = 20
ROUNDS = 50


def _race(stores: list[Store], attempt: Callable[[Store, int, int], None]) -> list[Counter[str]]:
    """Run `attempt(store, thread, round)` from THREADS threads, all released together per
    round; return per round how many attempts succeeded, were replays, or failed otherwise.
    """
    barrier = threading.Barrier(THREADS)
    outcomes: list[Counter[str]] = [Counter() for _ in range(ROUNDS)]
    lock = threading.Lock()

    def worker(thread: int) -> None:
        store = stores[thread % len(stores)]
        for round_ in range(ROUNDS):
            try:
                barrier.wait(timeout=60)
            except threading.BrokenBarrierError:
                with lock:
                    outcomes[round_]["barrier broken"] += 1
                return
            try:
                attempt(store, thread, round_)
                outcome = "ok"
            except Replayed:
                outcome = "replayed"
            except Exception as exc:  # noqa: BLE001 - any other exception is the failure
                outcome = f"{type(exc).__name__}: {exc}"
            with lock:
                outcomes[round_][outcome] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


@pytest.mark.postgres
def test_two_instances_racing_for_a_nonce_accept_it_exactly_once(
    postgres_url: str, clock: FakeClock, open_store: OpenStore
) -> None:
    first = open_store(postgres_url, clock=clock)
    first.upgrade()
    second = open_store(postgres_url, clock=clock)  # its own engine and pool

    def claim(store: Store, thread: int, round_: int) -> None:
        store.record(
            nonce=f"race-{round_}",
            nonce_ttl=TTL,
            events=[_event(f"call-{round_}", decision=f"thread-{thread}")],
        )

    outcomes = _race([first, second], claim)

    assert outcomes == [Counter(ok=1, replayed=THREADS - 1)] * ROUNDS
    assert len(_nonce_rows(first)) == ROUNDS
    per_call = Counter(event["call_uuid"] for event in stored_events(first))
    assert per_call == Counter({f"call-{n}": 1 for n in range(ROUNDS)})


@pytest.mark.postgres
def test_two_instances_storing_the_same_hangups_keep_one_row_each(
    postgres_url: str, clock: FakeClock, open_store: OpenStore
) -> None:
    first = open_store(postgres_url, clock=clock)
    first.upgrade()
    second = open_store(postgres_url, clock=clock)

    def store_hangup(store: Store, thread: int, round_: int) -> None:
        form = _hangup_form(f"h-{round_}", Duration=str(thread))
        store.record(
            nonce=f"hangup-{round_}-{thread}", nonce_ttl=TTL, hangup=Hangup.from_form(form)
        )

    outcomes = _race([first, second], store_hangup)

    assert outcomes == [Counter(ok=THREADS)] * ROUNDS
    assert _count(first, hangups) == ROUNDS
    assert len(_nonce_rows(first)) == ROUNDS * THREADS
    for round_ in range(ROUNDS):
        row = stored_hangup(first, f"h-{round_}")
        assert row is not None
        assert row["duration"] in range(THREADS)  # one writer's whole row, not a mixture


# --- 7. a database that does not answer ----------------------------------------------------


def _unreachable(open_store: OpenStore, clock: FakeClock) -> Store:
    return open_store(UNREACHABLE_URL, clock=clock)


def test_record_on_an_unreachable_database_fails_fast_without_leaking_values(
    open_store: OpenStore, clock: FakeClock
) -> None:
    store = _unreachable(open_store, clock)
    form = _hangup_form("call-secret-uuid", SIPAuthUser="secret-user-value")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as excinfo:
        store.record(
            nonce="nonce-secret-value",
            nonce_ttl=TTL,
            events=[_event("call-secret-uuid", sip_auth_user="secret-user-value")],
            hangup=Hangup.from_form(form),
        )
    assert time.monotonic() - started < 5  # a bound on a hang, not a speed claim

    assert excinfo.value.status == 503
    assert str(excinfo.value) == "database error (OperationalError)"
    values = ("nonce-secret-value", "call-secret-uuid", "secret-user-value", "alice")
    _assert_not_in_message(excinfo.value, *values)
    chained = _chain_text(excinfo.value)
    assert not [value for value in values if value in chained]


def test_ping_upgrade_and_schema_check_on_an_unreachable_database(
    open_store: OpenStore, clock: FakeClock
) -> None:
    store = _unreachable(open_store, clock)
    started = time.monotonic()
    assert store.ping() is False
    store.upgrade_if_reachable()  # logs, does not raise
    assert schema_is_current(store) is None
    with pytest.raises(StoreUnavailable):
        store.purge_nonces()
    assert time.monotonic() - started < 10  # four attempts, each must fail fast


def test_read_helpers_report_an_unreachable_database_as_store_unavailable(
    open_store: OpenStore, clock: FakeClock
) -> None:
    store = _unreachable(open_store, clock)
    with pytest.raises(StoreUnavailable):
        stored_events(store)
    with pytest.raises(StoreUnavailable):
        stored_hangup(store, "call-1")


def _kill_backends(url: str) -> int:
    """Terminate every other session on `url`'s database (a restart, as its clients see it)."""
    name = make_url(url).database
    admin = Store(url)
    try:
        with admin.engine.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(killed)


@pytest.mark.postgres
def test_a_pooled_connection_killed_while_idle_is_replaced_before_use(
    postgres_url: str, clock: FakeClock, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle pooled connection is pinged at checkout: one the server dropped meanwhile is
    replaced, and the callback is stored as if nothing happened."""
    store = open_store(postgres_url, clock=clock)
    store.upgrade()
    store.record(nonce="n-before", nonce_ttl=TTL, events=[_event("call-before")])
    assert _kill_backends(postgres_url) >= 1
    monkeypatch.setattr(database, "_PING_AFTER", 0.0)  # every pooled connection is idle now
    store.record(nonce="n-after", nonce_ttl=TTL, events=[_event("call-after")])
    assert [e["call_uuid"] for e in stored_events(store, "call-after")] == ["call-after"]


@pytest.mark.postgres
def test_a_restart_under_load_fails_one_callback_not_one_per_pooled_connection(
    postgres_url: str, clock: FakeClock, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections used moments ago are not pinged, so the first statement on a dead one fails
    (StoreUnavailable, nothing written), as with the database down. From then on every pooled
    connection last used before that is pinged at checkout and replaced: one failure in all."""
    store = open_store(postgres_url, clock=clock, threads=5)
    store.upgrade()
    held = [store.engine.raw_connection() for _ in range(5)]  # five pooled connections
    for raw in held:
        raw.close()
    monkeypatch.setattr(database, "_PING_AFTER", 3600.0)  # none of them counts as idle
    assert _kill_backends(postgres_url) >= 5
    with pytest.raises(StoreUnavailable):
        store.record(nonce="n-first", nonce_ttl=TTL, events=[_event("call-first")])
    # Every pooled connection at once (the pool is LIFO: one after another would reuse one).
    held = [store.engine.raw_connection() for _ in range(5)]
    try:
        for raw in held:
            cursor = raw.cursor()
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
            cursor.close()
    finally:
        for raw in held:
            raw.close()
    for i in range(5):
        store.record(nonce=f"n-{i}", nonce_ttl=TTL, events=[_event(f"call-{i}")])
    assert len(stored_events(store)) == 5


def test_ping_is_true_on_a_reachable_database(store: Store) -> None:
    assert store.ping() is True


# --- 8. URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
        ("postgresql://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
        ("postgres://db/app?sslmode=require", "postgresql+psycopg://db/app?sslmode=require"),
        ("postgresql+psycopg://db/app", "postgresql+psycopg://db/app"),
        ("sqlite:///instance/sipguard.db", "sqlite:///instance/sipguard.db"),
        ("sqlite:////var/lib/sipguard.db", "sqlite:////var/lib/sipguard.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_normalise_url(url: str, expected: str) -> None:
    assert normalise_url(url) == expected
    assert normalise_url(expected) == expected


def test_store_uses_psycopg_for_plain_postgres_urls(open_store: OpenStore) -> None:
    store = open_store("postgres://postgres@127.0.0.1:1/nope")  # nothing is connected
    assert store.url == "postgresql+psycopg://postgres@127.0.0.1:1/nope"
    assert (store.dialect, store.engine.dialect.driver) == ("postgresql", "psycopg")


# --- 9. the Alembic migration --------------------------------------------------------------


def _schema_diff(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def test_migration_produces_exactly_the_metadata_schema(
    database_url: str, open_store: OpenStore
) -> None:
    store = open_store(database_url)
    assert schema_is_current(store) is False  # empty database
    assert _schema_diff(store) != []  # the comparison does see a missing schema
    store.upgrade()
    assert _schema_diff(store) == []
    assert schema_is_current(store) is True


def test_upgrade_twice_is_harmless(
    database_url: str, clock: FakeClock, open_store: OpenStore
) -> None:
    store = open_store(database_url, clock=clock)
    store.upgrade()
    store.record(nonce="n-1", nonce_ttl=TTL, events=[_event("call-1")])
    store.upgrade()
    assert schema_is_current(store) is True
    assert _schema_diff(store) == []
    assert [e["call_uuid"] for e in stored_events(store)] == ["call-1"]
    with pytest.raises(Replayed):
        store.record(nonce="n-1", nonce_ttl=TTL)


def _upgrade_in_child(url: str, barrier: Any) -> None:
    """Run in a spawned process: start the migration together with the other children."""
    store = Store(url)
    barrier.wait(timeout=60)
    store.upgrade()
    store.dispose()


@pytest.mark.slow
def test_concurrent_upgrades_of_one_fresh_sqlite_file_all_succeed(
    sqlite_url: str, open_store: OpenStore
) -> None:
    processes = 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    children = [
        context.Process(target=_upgrade_in_child, args=(sqlite_url, barrier))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0] * processes

    store = open_store(sqlite_url)
    assert schema_is_current(store) is True
    assert _schema_diff(store) == []


@pytest.mark.postgres
def test_concurrent_upgrades_of_one_fresh_postgres_database_all_succeed(
    postgres_url: str, open_store: OpenStore
) -> None:
    instances = [open_store(postgres_url) for _ in range(4)]
    barrier = threading.Barrier(len(instances))
    errors: list[BaseException] = []

    def upgrade(store: Store) -> None:
        try:
            barrier.wait(timeout=60)
            store.upgrade()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(s,)) for s in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert schema_is_current(instances[0]) is True
    assert _schema_diff(instances[0]) == []


# --- 10. SQLite pragmas --------------------------------------------------------------------


def test_sqlite_runs_in_wal_mode(sqlite_url: str, open_store: OpenStore) -> None:
    store = open_store(sqlite_url)
    store.upgrade()
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    # WAL is a property of the file: a connection that did not set it sees it too.
    database = make_url(sqlite_url).database
    assert database is not None
    raw = sqlite3.connect(database)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()
