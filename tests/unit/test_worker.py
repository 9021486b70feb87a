"""The delivery worker over an in-memory outbox that honours leases as the protocol says, and a
real receiver on 127.0.0.1. The clock is injected: the outbox, the leases, the schedule and the
webhook timestamps all read one FakeClock, and no test sleeps beyond fractions of a second."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook

from devtools.receiver import Answer, Receiver
from sipguard.commands import main
from sipguard.commands.context import Standalone
from sipguard.commands.worker import schedule
from sipguard.errors import ConfigError, StoreUnavailable
from sipguard.notify.delivery import Delivery, Outcome, Schedule
from sipguard.notify.model import OutboxEvent, webhook_secret
from sipguard.notify.worker import LEASE_MARGIN, Worker, lease_for
from sipguard.settings import SETTINGS, load_settings
from sipguard.store.handoffs import HandoffRequest
from tests.support.config import SECRET_KEY
from tests.support.outbox import FakeClock, MemoryOutbox

KEY_A = "key_aaaaaaaaaaaaaaaa"
KEY_B = "key_bbbbbbbbbbbbbbbb"
CANARY_SUMMARY = "Canary-Summary-0d9c caller's account number 4421"
BODY = f'{{"type":"handoff.failed","data":{{"summary":"{CANARY_SUMMARY}"}}}}'.encode()
secret_for = functools.partial(webhook_secret, SECRET_KEY)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outbox(clock: FakeClock) -> MemoryOutbox:
    return MemoryOutbox(clock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def make_worker(outbox: MemoryOutbox, clock: FakeClock, *, timeout: float = 2, **kw: Any) -> Worker:
    delivery = Delivery(timeout=timeout, clock=clock, random=lambda: 0.5)
    return Worker(outbox, delivery, secret_for, poll=0.01, **kw)


def drain(worker: Worker, outbox: MemoryOutbox, clock: FakeClock, rounds: int = 200) -> None:
    """Run the worker, moving the clock on to the next due time whenever nothing is due."""
    for _ in range(rounds):
        if not outbox.pending():
            return
        if worker.run_once() == 0:
            due = outbox.next_due()
            assert due is not None
            clock.advance(max(due - clock(), timedelta(0)))
    pytest.fail("the outbox did not drain")


def signed_by(request: Any, api_key_id: str) -> bool:
    """Check a received request's signature with the reference library, at its own timestamp."""
    moment = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), UTC)
    expected = Webhook(secret_for(api_key_id)).sign(
        request.webhook_id, moment, request.body.decode()
    )
    return bool(request.headers["webhook-signature"] == expected)


# --- one pass -------------------------------------------------------------------------------------


def test_run_once_delivers_what_is_due_and_records_it(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver
) -> None:
    ids = [outbox.add(receiver.url, body=BODY, api_key_id=key) for key in (KEY_A, KEY_B, KEY_A)]
    worker = make_worker(outbox, clock)
    assert worker.run_once() == 3
    assert worker.run_once() == 0  # nothing left, nothing claimed twice
    assert receiver.ids() == ids
    for event_id in ids:
        row = outbox.rows[event_id]
        assert (row.delivered_at, row.last_status, row.attempts) == (clock(), 200, 1)
    # Each key's events are signed with that key's own secret.
    keys = [KEY_A, KEY_B, KEY_A]
    assert all(
        signed_by(request, key) for request, key in zip(receiver.requests, keys, strict=True)
    )
    assert not signed_by(receiver.requests[1], KEY_A)


def test_the_lease_covers_a_delivery_twice_the_timeout_and_a_margin() -> None:
    assert lease_for(10) == timedelta(seconds=25) == timedelta(seconds=20) + LEASE_MARGIN
    outbox = MemoryOutbox(FakeClock())
    assert Worker(outbox, Delivery(timeout=3), secret_for).lease == timedelta(seconds=11)


# --- nothing lost ---------------------------------------------------------------------------------


def test_a_receiver_down_for_a_while_gets_every_event_once_it_is_back(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver
) -> None:
    ids = [outbox.add(receiver.url, body=BODY) for _ in range(5)]
    worker = make_worker(outbox, clock)
    receiver.stop()  # down: connections refused
    for _ in range(3):
        assert worker.run_once() == 5
        assert worker.run_once() == 0  # not due again before its retry time
        clock.advance(outbox.next_due() - clock())  # type: ignore[operator]
    receiver.start()  # back, but failing for one more round
    receiver.answer(*[Answer(503)] * 5)
    assert worker.run_once() == 5
    drain(worker, outbox, clock)
    assert not outbox.pending()
    assert sorted(request.webhook_id for request in receiver.delivered) == ids
    # Every attempt that reached it carried the event's one webhook-id and its exact bytes.
    assert Counter(receiver.ids()) == {event_id: 2 for event_id in ids}
    assert all(request.body == BODY for request in receiver.requests)
    assert all(outbox.rows[event_id].attempts == 5 for event_id in ids)
    # 5 s, 30 s, 2 min, 10 min of backoff: the last attempt 12 min 35 s after the first.
    assert clock() - outbox.rows[ids[0]].event.created_at == timedelta(minutes=12, seconds=35)


class Killed(BaseException):
    """The process dying mid-delivery: no handler, no result recorded, no lease released."""


class DiesAfterSending(Delivery):
    def deliver(self, event: OutboxEvent, secret: str | None, url: str | None = None) -> Outcome:
        super().deliver(event, secret, url)  # the receiver got it...
        raise Killed  # ...and the worker died before recording anything


def test_a_worker_killed_mid_delivery_leaves_its_events_to_another_after_the_lease(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver
) -> None:
    ids = [outbox.add(receiver.url) for _ in range(3)]
    dying = Worker(outbox, DiesAfterSending(timeout=2, clock=clock), secret_for)
    with pytest.raises(Killed):
        dying.run_once()
    assert receiver.ids() == ids[:1]
    other = make_worker(outbox, clock)
    assert other.run_once() == 0  # all three are still leased to the dead worker
    clock.advance(dying.lease - timedelta(seconds=1))
    assert other.run_once() == 0
    clock.advance(timedelta(seconds=1))  # the lease has run out
    assert other.run_once() == 3
    assert not outbox.pending()
    # At least once: the first event twice, with the same webhook-id; none lost.
    assert receiver.ids() == [ids[0], *ids]
    assert sorted(request.webhook_id for request in receiver.delivered) == sorted([ids[0], *ids])


def test_two_workers_never_deliver_one_event_at_the_same_time(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.default = Answer(200, delay=0.02)
    ids = [outbox.add(receiver.url) for _ in range(24)]
    workers = [make_worker(outbox, clock, batch=3) for _ in range(2)]
    attempted: Counter[int] = Counter()
    start = threading.Barrier(2)

    def work(number: int) -> None:
        start.wait(timeout=5)
        deadline = time.monotonic() + 10
        while outbox.pending() and time.monotonic() < deadline:
            attempted[number] += workers[number].run_once()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert not outbox.pending()
    assert receiver.max_in_flight == 1
    assert sorted(receiver.ids()) == ids  # each exactly once: no lease ran out meanwhile
    assert attempted[0] + attempted[1] == 24


class SlowDelivery(Delivery):
    """Each delivery takes `takes` on the fake clock (a receiver slow to answer)."""

    takes = timedelta(seconds=15)

    def deliver(self, event: OutboxEvent, secret: str | None, url: str | None = None) -> Outcome:
        outcome = super().deliver(event, secret, url)
        self.clock.advance(self.takes)  # type: ignore[attr-defined]
        return outcome


def test_a_batch_is_cut_short_rather_than_deliver_past_its_lease(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver
) -> None:
    ids = [outbox.add(receiver.url) for _ in range(3)]
    slow = Worker(outbox, SlowDelivery(timeout=10, clock=clock), secret_for)  # lease 25 s
    other = make_worker(outbox, clock)
    # After one 15 s delivery, a second (up to 20 s) would end past the lease: left for later.
    assert slow.run_once() == 1
    assert other.run_once() == 0  # still leased to the slow worker: nobody delivers it meanwhile
    clock.advance(timedelta(seconds=10))
    assert other.run_once() == 2
    assert receiver.ids() == ids and not outbox.pending()


# --- giving up ------------------------------------------------------------------------------------


def test_an_event_the_receiver_keeps_failing_is_given_up_after_the_schedule(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.default = Answer(500)
    event_id = outbox.add(receiver.url)
    worker = make_worker(outbox, clock)
    drain(worker, outbox, clock)
    row = outbox.rows[event_id]
    assert row.gave_up_at is not None and row.delivered_at is None
    assert row.gave_up_at - row.event.created_at <= timedelta(days=3)
    assert (row.attempts, row.last_status) == (19, 500)
    assert row.last_error == "HTTP 500; gave up: not delivered in 3 days"
    assert len(receiver.requests) == 19
    assert worker.run_once() == 0  # never again


def test_gone_gives_up_at_once_and_the_others_still_go(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.answer(Answer(410))
    gone, fine = outbox.add(receiver.url), outbox.add(receiver.url)
    assert make_worker(outbox, clock).run_once() == 2
    assert outbox.rows[gone].gave_up_at == clock() and outbox.rows[gone].attempts == 1
    assert outbox.rows[fine].delivered_at == clock()


# --- failures around delivery ---------------------------------------------------------------------


class FlakyOutbox(MemoryOutbox):
    down_for_claims = 0
    down_for_marks = 0

    def claim_due(self, limit: int, lease: timedelta) -> list[OutboxEvent]:
        if self.down_for_claims:
            self.down_for_claims -= 1
            raise StoreUnavailable("database unavailable (OperationalError)")
        return super().claim_due(limit, lease)

    def mark_delivered(self, event_id: str, status: int) -> None:
        if self.down_for_marks:
            self.down_for_marks -= 1
            raise StoreUnavailable("database unavailable (OperationalError)")
        super().mark_delivered(event_id, status)


def test_a_database_outage_loses_nothing(clock: FakeClock, receiver: Receiver) -> None:
    outbox = FlakyOutbox(clock)
    event_id = outbox.add(receiver.url)
    worker = make_worker(outbox, clock)
    outbox.down_for_claims = 1
    assert worker.run_once() == 0  # claiming failed: logged, tried again next time
    outbox.down_for_marks = 1
    assert worker.run_once() == 1  # delivered, but the result could not be recorded
    assert outbox.pending() and worker.run_once() == 0  # still leased
    clock.advance(worker.lease)
    assert worker.run_once() == 1  # sent again after the lease, with the same webhook-id
    assert not outbox.pending()
    assert receiver.ids() == [event_id, event_id]


def test_an_unexpected_error_is_retried_on_the_schedule_and_the_loop_goes_on(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver
) -> None:
    def broken_secret(api_key_id: str) -> str:
        if api_key_id == KEY_B:
            raise LookupError("no secret")
        return secret_for(api_key_id)

    bad = outbox.add(receiver.url, api_key_id=KEY_B)
    good = outbox.add(receiver.url)
    worker = Worker(outbox, Delivery(timeout=2, clock=clock, random=lambda: 0.5), broken_secret)
    assert worker.run_once() == 2
    assert outbox.rows[good].delivered_at is not None
    row = outbox.rows[bad]
    assert row.last_error == "internal error (LookupError)"
    assert row.next_attempt_at == clock() + timedelta(seconds=5)
    assert receiver.ids() == [good]


def test_logs_name_the_event_never_its_body_secret_or_url(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver, app_logs: Any
) -> None:
    url = f"{receiver.url}?auth=Canary-Url-Token-5e5e"
    receiver.answer(Answer(503))
    event_id = outbox.add(url, body=BODY)
    worker = make_worker(outbox, clock)
    worker.run_once()
    clock.advance(timedelta(seconds=5))
    worker.run_once()
    text = "\n".join(record.getMessage() for record in app_logs.records)
    assert f"webhook={event_id} type=handoff.transferred attempt=1 result=retry status=503" in text
    assert f"webhook={event_id} type=handoff.transferred attempt=2 result=delivered" in text
    secret = secret_for("key_0123456789abcdef")
    for private in (CANARY_SUMMARY, "Canary-Url-Token", secret, secret[6:], SECRET_KEY):
        assert private not in text


# --- stopping -------------------------------------------------------------------------------------


class SignalledMidDelivery(Delivery):
    """SIGTERM arrives while the first event is being delivered."""

    def deliver(self, event: OutboxEvent, secret: str | None, url: str | None = None) -> Outcome:
        if not getattr(self, "signalled", False):
            self.signalled = True
            signal.raise_signal(signal.SIGTERM)
        return super().deliver(event, secret, url)


def test_sigterm_stops_the_loop_after_the_event_in_hand(
    outbox: MemoryOutbox, clock: FakeClock, receiver: Receiver
) -> None:
    ids = [outbox.add(receiver.url) for _ in range(3)]
    worker = Worker(outbox, SignalledMidDelivery(timeout=2, clock=clock), secret_for, poll=0.01)
    before = signal.getsignal(signal.SIGTERM)
    with worker.signals():
        worker.run()
    assert signal.getsignal(signal.SIGTERM) is before  # the old handler is back
    assert worker.stopping
    assert receiver.ids() == ids[:1]  # the event in hand was finished and recorded...
    assert outbox.rows[ids[0]].delivered_at is not None
    # ...the rest stay leased, and another worker takes them once the lease runs out.
    clock.advance(worker.lease)
    assert make_worker(outbox, clock).run_once() == 2


@pytest.mark.parametrize(
    "number", [signal.SIGTERM, signal.SIGINT, None], ids=["SIGTERM", "SIGINT", "stop"]
)
def test_a_signal_or_stop_wakes_an_idle_worker_at_once(
    outbox: MemoryOutbox, number: int | None
) -> None:
    worker = Worker(outbox, Delivery(timeout=2, clock=outbox.clock), secret_for, poll=30)
    with worker.signals():
        if number is None:  # another thread asks
            timer = threading.Timer(0.1, worker.stop)
        else:
            timer = threading.Timer(0.1, os.kill, args=(os.getpid(), number))
        started = time.monotonic()
        timer.start()
        try:
            worker.run()  # polls every 30 s: only the signal ends it this soon
        finally:
            timer.cancel()
    assert time.monotonic() - started < 5


# --- settings and the command ---------------------------------------------------------------------


def test_the_worker_settings_default_and_parse_like_the_others(tmp_path: Any) -> None:
    env = {
        "PLIVO_AUTH_TOKEN": "t" * 20,
        "SECRET_KEY": SECRET_KEY,
        "PUBLIC_BASE_URL": "https://voice.example.test",
        "VOICE_CONFIG": str(tmp_path / "voice.toml"),
    }
    settings = load_settings(env, tmp_path)
    assert (settings.webhook_timeout, settings.webhook_poll) == (10, 1)
    tuned = {**env, "WEBHOOK_TIMEOUT_SECONDS": " 30 ", "WEBHOOK_POLL_SECONDS": "5"}
    assert load_settings(tuned, tmp_path).webhook_timeout == 30
    assert load_settings(tuned, tmp_path).webhook_poll == 5
    for name, raw, message in [
        ("WEBHOOK_TIMEOUT_SECONDS", "ten", "WEBHOOK_TIMEOUT_SECONDS must be a whole number"),
        ("WEBHOOK_TIMEOUT_SECONDS", "0", "WEBHOOK_TIMEOUT_SECONDS must be at least 1"),
        ("WEBHOOK_POLL_SECONDS", "0.5", "WEBHOOK_POLL_SECONDS must be a whole number"),
    ]:
        with pytest.raises(Exception, match=message):
            SETTINGS[name].read({name: raw})


def test_the_retry_schedule_setting_defaults_to_the_delivery_schedule(tmp_path: Any) -> None:
    env = {
        "PLIVO_AUTH_TOKEN": "t" * 20,
        "SECRET_KEY": SECRET_KEY,
        "PUBLIC_BASE_URL": "https://voice.example.test",
        "VOICE_CONFIG": str(tmp_path / "voice.toml"),
    }
    assert schedule(load_settings(env, tmp_path).webhook_retry_seconds) == Schedule()
    short = schedule(SETTINGS["WEBHOOK_RETRY_SECONDS"].read({"WEBHOOK_RETRY_SECONDS": "1, 2"}))
    assert (short.steps, short.every) == ((timedelta(seconds=1),), timedelta(seconds=2))
    assert short.pause(1, 0.5) == timedelta(seconds=1) and short.pause(9, 0.5) == short.every
    assert schedule((3,)).steps == () and schedule((3,)).every == timedelta(seconds=3)
    for raw, message in [
        ("5,,30", "must be a whole number"),
        ("5,half", "must be a whole number"),
        ("5,0", "must be at least 1"),
        (",".join(["1"] * 33), "more than 32 pauses"),
    ]:
        with pytest.raises(ConfigError, match=message):
            SETTINGS["WEBHOOK_RETRY_SECONDS"].read({"WEBHOOK_RETRY_SECONDS": raw})


def test_sipguard_worker_once_delivers_whats_due_in_the_store_and_exits(
    app_config: dict[str, str], receiver: Receiver
) -> None:
    """The command over the real store: 12 queued outcome webhooks, delivered in batches of 5."""
    info = Standalone(app_config)
    store = info.load_app().extensions["sipguard"].store
    try:
        key = store.create_api_key("worker-test", callback_url=receiver.url).key
        ids = []
        for n in range(12):
            created = store.create_handoff(
                HandoffRequest(key.id, f"call-{n}", "support", request_hash=f"{n:064d}")
            )
            moved = store.transition(created.handoff.id, "transferred", "handoff.transferred")
            assert moved is not None and moved.event_id is not None
            ids.append(moved.event_id)
        result = CliRunner().invoke(main.cli, ["worker", "--once", "--batch", "5"], obj=info)
        assert result.exit_code == 0, result.output
        assert result.stdout == "attempted 12 webhook delivery(ies)\n"
        assert sorted(receiver.ids()) == sorted(ids)
        assert store.claim_due(100, timedelta(seconds=30)) == []
        # Signed with the key's secret derived from the app's SECRET_KEY.
        Webhook(secret_for(key.id)).verify(receiver.requests[0].body, receiver.requests[0].headers)
    finally:
        store.dispose()


def test_sipguard_worker_with_a_bad_setting_is_one_line_and_exit_2(
    app_config: dict[str, str],
) -> None:
    environ = {**app_config, "WEBHOOK_TIMEOUT_SECONDS": "soon"}
    result = CliRunner().invoke(main.cli, ["worker", "--once"], obj=Standalone(environ))
    assert result.exit_code == 2
    assert result.stderr == (
        "error: WEBHOOK_TIMEOUT_SECONDS must be a whole number, got 'soon'\n"
    ), result.output


def test_the_flask_cli_offers_the_worker(app: Any) -> None:
    assert "worker" in app.cli.commands
    assert logging.getLogger("sipguard.notify").parent is logging.getLogger("sipguard")
