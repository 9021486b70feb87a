"""Handoffs and the webhook outbox in the store, on SQLite and PostgreSQL.

Idempotency and "one live handoff per call" are decided by unique indexes, so they hold when two
Stores (two instances) race on one database; a state change and its webhook commit together;
claimed webhooks are leased, so two workers never hold one at the same time.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from sipguard.errors import (
    HandoffConflict,
    IdempotencyMismatch,
    StoreUnavailable,
    UnknownHandoff,
    ValidationError,
)
from sipguard.notify.model import Outbox, OutboxEvent
from sipguard.store import (
    Created,
    HandoffRequest,
    Store,
    handoff_attempts,
    handoffs,
    webhook_outbox,
)
from sipguard.store.handoffs import WAITING_STATES, request_hash
from tests.support.databases import opened_stores

T0 = datetime(2024, 5, 1, 12, 0, 0)
LEASE = timedelta(seconds=30)
CALL = "a1b2c3d4-0000-4000-8000-000000000001"
SUMMARY = "Canary-Summary: caller Jane Roe, account 4417, wants a refund"
HOOK = "https://ai.example.test/hooks"


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_store(database_url: str, clock: FakeClock) -> Iterator[Callable[[], Store]]:
    with opened_stores(database_url, clock) as opener:
        yield opener


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    first = open_store()
    first.upgrade()
    return first


@pytest.fixture
def key_id(store: Store) -> str:
    return store.create_api_key("ai", HOOK).key.id


def _request(key_id: str, **changes: Any) -> HandoffRequest:
    body = {"call_uuid": CALL, "group": "support", "summary": SUMMARY, **changes.pop("body", {})}
    values: dict[str, Any] = {
        "api_key_id": key_id,
        "call_uuid": body["call_uuid"],
        "group_name": body["group"],
        "request_hash": request_hash(body),
        "summary": body["summary"],
        "fields": {"Ticket": "4417"},
        "whisper": True,
        "on_failure": "return",
        "return_url": "wss://ai.example.test/stream",
        **changes,
    }
    return HandoffRequest(**values)


def _outbox(store: Store) -> list[dict[str, Any]]:
    return store.query(select(webhook_outbox).order_by(webhook_outbox.c.created_at))


# -- create, idempotency, one live handoff per call ----------------------------------------------


def test_create_stores_a_requested_handoff(store: Store, key_id: str) -> None:
    created = store.create_handoff(_request(key_id, idempotency_key="k-1"))
    assert not created.replayed
    handoff = created.handoff
    assert re.fullmatch(r"ho_[0-9a-z]{22}", handoff.id)
    assert handoff.state == "requested" and handoff.live
    assert handoff.call_uuid == CALL and handoff.group_name == "support"
    assert handoff.summary == SUMMARY and SUMMARY not in repr(handoff)
    assert handoff.fields == {"Ticket": "4417"} and handoff.whisper is True
    assert handoff.on_failure == "return" and handoff.created_at == T0
    assert store.get_handoff(handoff.id) == handoff
    assert store.get_handoff("ho_unknown") is None


def test_the_same_idempotency_key_and_body_give_the_first_handoff_back(
    store: Store, key_id: str, clock: FakeClock
) -> None:
    first = store.create_handoff(_request(key_id, idempotency_key="k-1"))
    clock.advance(timedelta(seconds=3))
    again = store.create_handoff(_request(key_id, idempotency_key="k-1"))
    assert again.replayed and again.handoff == first.handoff
    assert len(store.query(select(handoffs))) == 1


def test_the_idempotency_key_with_another_body_is_a_422_conflict(store: Store, key_id: str) -> None:
    store.create_handoff(_request(key_id, idempotency_key="k-1"))
    changed = _request(key_id, idempotency_key="k-1", body={"summary": "something else"})
    with pytest.raises(IdempotencyMismatch) as raised:
        store.create_handoff(changed)
    assert raised.value.status == 422
    assert SUMMARY not in raised.value.message


def test_idempotency_keys_belong_to_their_api_key(store: Store, key_id: str) -> None:
    other = store.create_api_key("ai-2").key.id
    store.create_handoff(_request(key_id, idempotency_key="k-1"))
    # Another key's k-1 is another request: here it is refused only because the call is live.
    with pytest.raises(HandoffConflict):
        store.create_handoff(_request(other, idempotency_key="k-1"))


def test_a_second_live_handoff_for_the_call_is_a_409_conflict(store: Store, key_id: str) -> None:
    first = store.create_handoff(_request(key_id, idempotency_key="k-1"))
    for key in ("k-2", None):
        with pytest.raises(HandoffConflict) as raised:
            store.create_handoff(_request(key_id, idempotency_key=key))
        assert raised.value.status == 409 and first.handoff.id in raised.value.message


def test_a_finished_handoff_frees_the_call(store: Store, key_id: str) -> None:
    first = store.create_handoff(_request(key_id))
    store.transition(first.handoff.id, "returned")
    second = store.create_handoff(_request(key_id))
    assert second.handoff.id != first.handoff.id and not second.replayed


def _race(stores: list[Store], work: Callable[[Store], Any], threads: int = 8) -> list[Any]:
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(stores[index % len(stores)])
        except Exception as exc:  # noqa: BLE001 - the result under test
            results[index] = exc

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return results


def test_racing_the_same_idempotency_key_from_two_instances_makes_one_handoff(
    store: Store, key_id: str, open_store: Callable[[], Store]
) -> None:
    stores = [store, open_store()]
    results = _race(stores, lambda s: s.create_handoff(_request(key_id, idempotency_key="k-1")))
    assert all(isinstance(result, Created) for result in results), results
    assert len({result.handoff.id for result in results}) == 1
    assert Counter(result.replayed for result in results) == {True: 7, False: 1}
    assert len(store.query(select(handoffs))) == 1


def test_racing_handoffs_of_one_call_from_two_instances_lets_one_through(
    store: Store, key_id: str, open_store: Callable[[], Store]
) -> None:
    stores = [store, open_store()]
    counter = iter(range(100))
    lock = threading.Lock()

    def create(s: Store) -> Created:
        with lock:
            key = f"k-{next(counter)}"
        return s.create_handoff(_request(key_id, idempotency_key=key))

    results = _race(stores, create)
    assert Counter(type(result).__name__ for result in results) == {
        "Created": 1,
        "HandoffConflict": 7,
    }, results
    assert len(store.query(select(handoffs))) == 1


# -- transitions and their webhooks ---------------------------------------------------------------


def test_a_transition_queues_its_webhook_with_the_exact_body(
    store: Store, key_id: str, clock: FakeClock
) -> None:
    handoff = store.create_handoff(_request(key_id)).handoff
    clock.advance(timedelta(seconds=2))
    moved = store.transition(
        handoff.id, "transferred", "handoff.transferred", plivo_api_id="api-123"
    )
    assert moved is not None and moved.handoff.state == "transferred"
    assert moved.handoff.plivo_api_id == "api-123" and moved.handoff.updated_at == clock.now
    assert moved.event_id is not None and re.fullmatch(r"msg_[0-9a-z]{26}", moved.event_id)
    [row] = _outbox(store)
    assert row["id"] == moved.event_id and row["url"] == HOOK
    assert row["api_key_id"] == key_id and row["handoff_id"] == handoff.id
    assert row["event_type"] == "handoff.transferred" and row["attempts"] == 0
    assert row["next_attempt_at"] == clock.now and row["delivered_at"] is None
    assert json.loads(row["body"]) == {
        "type": "handoff.transferred",
        "timestamp": "2024-05-01T12:00:02.000Z",
        "data": {
            "handoff_id": handoff.id,
            "call_uuid": CALL,
            "group": "support",
            "state": "transferred",
        },
    }
    assert SUMMARY.encode() not in bytes(row["body"])


def _types_and_states(store: Store) -> list[tuple[str, str]]:
    bodies = [json.loads(row["body"]) for row in _outbox(store)]
    return [(body["type"], body["data"]["state"]) for body in bodies]


def test_plivo_calling_back_before_the_api_records_the_transfer_reports_it_first(
    store: Store, key_id: str, clock: FakeClock
) -> None:
    """Plivo fetched /handoff and rang before the API stored Plivo's answer: the first Dial
    records the transfer (webhook first, in order), and the API's own move then does nothing."""
    handoff = store.create_handoff(_request(key_id)).handoff
    store.start_attempt(handoff.id, 0, ["alice"], ringing=True)
    assert _types_and_states(store) == [("handoff.transferred", "transferred")]
    assert json.loads(_outbox(store)[0]["body"])["data"]["plivo_api_id"] is None
    clock.advance(timedelta(seconds=1))
    moved = store.transition(
        handoff.id, "connected", "handoff.agent_answered", from_states=WAITING_STATES,
        transferred=True,
    )  # fmt: skip
    assert moved is not None and moved.handoff.state == "connected"
    late = store.transition(
        handoff.id, "transferred", "handoff.transferred", from_states=("requested",)
    )
    assert late is None
    kept = store.note_plivo_api_id(handoff.id, "api-7")
    assert kept is not None and (kept.state, kept.plivo_api_id) == ("connected", "api-7")
    again = store.note_plivo_api_id(handoff.id, "api-8")  # the first recorded stays
    assert again is not None and again.plivo_api_id == "api-7"
    assert _types_and_states(store) == [
        ("handoff.transferred", "transferred"),
        ("handoff.agent_answered", "connected"),
    ]


def test_a_callback_ending_a_handoff_still_requested_reports_the_transfer_first(
    store: Store, key_id: str
) -> None:
    handoff = store.create_handoff(_request(key_id)).handoff
    store.transition(
        handoff.id, "returned", "handoff.returned", {"outcome": "closed"},
        from_states=WAITING_STATES, transferred=True,
    )  # fmt: skip
    assert _types_and_states(store) == [
        ("handoff.transferred", "transferred"),
        ("handoff.returned", "returned"),
    ]
    # Without the flag (the API's refusal path), a requested handoff just moves.
    other = store.create_handoff(_request(key_id, body={"call_uuid": "call-9"})).handoff
    store.transition(other.id, "failed", "handoff.failed", from_states=("requested",))
    assert _types_and_states(store)[-1] == ("handoff.failed", "failed")
    assert len(_outbox(store)) == 3


def test_the_handoffs_own_callback_url_wins_and_no_url_queues_nothing(store: Store) -> None:
    bare = store.create_api_key("bare").key.id
    own = store.create_handoff(_request(bare, callback_url="https://own.example.test/h"))
    store.transition(own.handoff.id, "failed", "handoff.failed", {"reason": "no-answer"})
    assert [row["url"] for row in _outbox(store)] == ["https://own.example.test/h"]
    other = store.create_handoff(_request(bare, body={"call_uuid": "call-2"}))
    moved = store.transition(other.handoff.id, "failed", "handoff.failed")
    assert moved is not None and moved.event_id is None
    assert len(_outbox(store)) == 1


def test_a_failed_transition_rolls_back_the_state_and_the_webhook(
    store: Store, key_id: str
) -> None:
    handoff = store.create_handoff(_request(key_id)).handoff
    with pytest.raises(TypeError):  # the event's data cannot be JSON: fails after the UPDATE
        store.transition(handoff.id, "connected", "handoff.agent_answered", {"x": object()})
    after = store.get_handoff(handoff.id)
    assert after is not None and after.state == "requested"
    assert _outbox(store) == []


def test_from_states_keeps_a_finished_handoff_finished(store: Store, key_id: str) -> None:
    handoff = store.create_handoff(_request(key_id)).handoff
    store.transition(handoff.id, "caller_hung_up", "handoff.caller_hung_up")
    late = store.transition(
        handoff.id, "connected", "handoff.agent_answered", from_states=("transferred", "ringing")
    )
    assert late is None
    after = store.get_handoff(handoff.id)
    assert after is not None and after.state == "caller_hung_up"
    assert [row["event_type"] for row in _outbox(store)] == ["handoff.caller_hung_up"]


def test_transition_refuses_unknown_handoffs_states_and_events(store: Store, key_id: str) -> None:
    handoff = store.create_handoff(_request(key_id)).handoff
    with pytest.raises(UnknownHandoff):
        store.transition("ho_nope", "failed")
    with pytest.raises(ValueError):
        store.transition(handoff.id, "lost")
    with pytest.raises(ValueError):
        store.transition(handoff.id, "failed", "handoff.exploded")


def test_attempts_are_recorded_once_and_end_once(
    store: Store, key_id: str, clock: FakeClock
) -> None:
    handoff = store.create_handoff(_request(key_id)).handoff
    store.start_attempt(handoff.id, 0, ["alice"])
    store.start_attempt(handoff.id, 0, ["alice"])  # Plivo retried the callback
    clock.advance(timedelta(seconds=15))
    assert store.end_attempt(handoff.id, 0, "sip_auth_failed", 4240)
    assert not store.end_attempt(handoff.id, 0, "answered")
    store.start_attempt(handoff.id, 1, ["bob"])
    found = store.get_handoff(handoff.id)
    assert found is not None
    first, second = found.attempts
    assert (first.agents, first.outcome, first.code) == (("alice",), "sip_auth_failed", 4240)
    assert first.started_at == T0 and first.ended_at == T0 + timedelta(seconds=15)
    assert (second.attempt, second.outcome, second.ended_at) == (1, None, None)
    [recent] = store.recent_handoffs()
    assert recent.attempts == found.attempts
    with pytest.raises(ValueError):
        store.end_attempt(handoff.id, 1, "exploded")


def test_recent_handoffs_are_newest_first(store: Store, key_id: str, clock: FakeClock) -> None:
    ids = []
    for n in range(3):
        ids.append(store.create_handoff(_request(key_id, body={"call_uuid": f"c-{n}"})).handoff.id)
        clock.advance(timedelta(minutes=1))
    assert [h.id for h in store.recent_handoffs()] == ids[::-1]
    assert [h.id for h in store.recent_handoffs(limit=2)] == ids[:0:-1]
    assert [h.id for h in store.recent_handoffs(since=T0 + timedelta(minutes=1))] == ids[:0:-1]


# -- the outbox -----------------------------------------------------------------------------------


def _events(store: Store, key_id: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        handoff = store.create_handoff(_request(key_id, body={"call_uuid": f"call-{n}"})).handoff
        moved = store.transition(handoff.id, "transferred", "handoff.transferred")
        assert moved is not None and moved.event_id is not None
        ids.append(moved.event_id)
    return ids


def test_the_store_is_an_outbox(store: Store) -> None:
    outbox: Outbox = store  # the shared protocol, checked by mypy
    assert outbox.claim_due(1, LEASE) == []


def test_a_claimed_event_is_leased_until_the_lease_runs_out(
    store: Store, key_id: str, clock: FakeClock
) -> None:
    [event_id] = _events(store, key_id, 1)
    [event] = store.claim_due(10, LEASE)
    assert isinstance(event, OutboxEvent)
    assert (event.id, event.url, event.attempts, event.api_key_id) == (event_id, HOOK, 0, key_id)
    assert event.body == bytes(_outbox(store)[0]["body"])
    assert store.claim_due(10, LEASE) == []
    clock.advance(LEASE - timedelta(microseconds=1))
    assert store.claim_due(10, LEASE) == []
    clock.advance(timedelta(microseconds=1))  # the worker died: its lease ran out
    [again] = store.claim_due(10, LEASE)
    assert again.id == event_id and again.body == event.body


def test_claims_honour_the_limit_and_the_due_time(
    store: Store, key_id: str, clock: FakeClock
) -> None:
    ids = _events(store, key_id, 3)
    first = store.claim_due(2, LEASE)
    assert len(first) == 2
    [last] = store.claim_due(2, LEASE)
    assert {e.id for e in first} | {last.id} == set(ids)
    for event in first:
        store.mark_delivered(event.id, 200)
    store.mark_failed(last.id, clock.now + timedelta(minutes=5), 503, "HTTP 503")
    assert store.claim_due(10, LEASE) == []
    clock.advance(timedelta(minutes=5))
    [retried] = store.claim_due(10, LEASE)
    assert retried.id == last.id and retried.attempts == 1
    row = next(r for r in _outbox(store) if r["id"] == last.id)
    assert (row["last_status"], row["last_error"], row["lease_until"]) == (
        503,
        "HTTP 503",
        clock.now + LEASE,
    )


def test_delivered_and_given_up_events_are_never_claimed_again(
    store: Store, key_id: str, clock: FakeClock
) -> None:
    delivered, given_up = _events(store, key_id, 2)
    assert len(store.claim_due(10, LEASE)) == 2
    store.mark_delivered(delivered, 204)
    store.mark_failed(given_up, None, None, "connection refused")
    store.mark_failed(delivered, clock.now, 500, "late")  # a finished event stays finished
    clock.advance(timedelta(days=1))
    assert store.claim_due(10, LEASE) == []
    rows = {row["id"]: row for row in _outbox(store)}
    assert rows[delivered]["delivered_at"] == T0 and rows[delivered]["last_status"] == 204
    assert rows[delivered]["attempts"] == 1 and rows[delivered]["gave_up_at"] is None
    assert rows[given_up]["gave_up_at"] == T0 and rows[given_up]["delivered_at"] is None
    assert rows[given_up]["last_error"] == "connection refused"


def test_two_claimers_never_get_the_same_event(
    store: Store, key_id: str, open_store: Callable[[], Store]
) -> None:
    ids = _events(store, key_id, 20)
    stores = [store, open_store()]
    claimed = _race(stores, lambda s: [e.id for e in s.claim_due(3, LEASE)], threads=8)
    assert all(isinstance(result, list) for result in claimed), claimed
    flat = [event_id for result in claimed for event_id in result]
    assert len(flat) == len(set(flat))
    assert set(flat) <= set(ids) and len(flat) == 20


def test_purge_takes_old_handoffs_and_finished_webhooks_but_keeps_undelivered_ones(
    store: Store, key_id: str, clock: FakeClock
) -> None:
    delivered, given_up, waiting = _events(store, key_id, 3)
    store.start_attempt(store.query(select(handoffs))[0]["id"], 0, ["alice"])
    store.claim_due(10, LEASE)
    store.mark_delivered(delivered, 200)
    store.mark_failed(given_up, None, 410, "HTTP 410")
    store.mark_failed(waiting, clock.now + timedelta(days=40), 503, "HTTP 503")
    clock.advance(timedelta(days=31))
    young = store.create_handoff(_request(key_id, body={"call_uuid": "young"})).handoff
    counts = store.purge_events(timedelta(days=30))
    assert counts["handoffs"] == 3 and counts["handoff_attempts"] == 1
    assert counts["webhook_outbox"] == 2
    assert [row["id"] for row in store.query(select(handoffs))] == [young.id]
    assert store.query(select(handoff_attempts)) == []
    assert [row["id"] for row in _outbox(store)] == [waiting]


def test_summaries_reach_no_log_line_or_error(
    store: Store, key_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sipguard").addHandler(caplog.handler)
    try:
        created = store.create_handoff(_request(key_id, idempotency_key="k-1"))
        with pytest.raises(IdempotencyMismatch) as mismatch:
            store.create_handoff(
                _request(key_id, idempotency_key="k-1", body={"summary": SUMMARY + "!"})
            )
        with pytest.raises(HandoffConflict) as conflict:
            store.create_handoff(_request(key_id, idempotency_key="k-2"))
        store.transition(created.handoff.id, "failed", "handoff.failed")
        down = Store("postgresql://postgres@127.0.0.1:1/nope")
        with pytest.raises(StoreUnavailable) as unavailable:
            down.create_handoff(_request(key_id))
        down.dispose()
    finally:
        logging.getLogger("sipguard").removeHandler(caplog.handler)
    for text in (caplog.text, str(mismatch.value), str(conflict.value), str(unavailable.value)):
        assert SUMMARY not in text and "Jane Roe" not in text
    assert "Jane Roe" not in repr(created) and "Jane Roe" not in repr(_request(key_id))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"call_uuid": "c" * 65}, "call_uuid"),
        ({"call_uuid": ""}, "call_uuid"),
        ({"group_name": "g" * 65}, "group"),
        ({"idempotency_key": "k" * 256}, "Idempotency-Key"),
    ],
)
def test_values_longer_than_their_columns_are_refused_by_name(
    store: Store, key_id: str, changes: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError, match=f"^{field}: "):
        store.create_handoff(_request(key_id, **changes))
    assert store.query(select(handoffs)) == []
