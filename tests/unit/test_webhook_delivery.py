"""Delivering one outcome webhook to a real HTTP receiver on 127.0.0.1: what each answer means,
when the next attempt is, and what the error kept for the store may say."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook

from devtools.receiver import Answer, Receiver
from sipguard.notify.delivery import Delivery, Outcome, Schedule, Verdict, parse_retry_after
from sipguard.notify.model import OutboxEvent, webhook_secret
from sipguard.store.database import now_utc
from tests.support.outbox import START, FakeClock

SECRET = webhook_secret("Canary-Secret-Key-" + "k" * 32, "key_0123456789abcdef")
CANARY_SUMMARY = "Canary-Summary-7f3e the caller's card was declined"
# Not normalised JSON, non-ASCII included: the receiver must get exactly these bytes.
BODY = (
    '{"type": "handoff.failed",  "timestamp": "2026-12-01T12:00:00Z", '
    f'"data": {{"summary": "{CANARY_SUMMARY}", "who": "Zoë"}}}}'
).encode()
URL_CANARY = "Canary-Url-Token-91ab"
MIDDLE = 0.5  # a draw of 0.5 cancels the jitter: pauses are exactly the schedule's steps


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def delivery(clock: FakeClock) -> Iterator[Delivery]:
    sender = Delivery(timeout=2, clock=clock, random=lambda: MIDDLE)
    yield sender
    sender.close()


def event(url: str, *, attempts: int = 0, created_at: datetime = START) -> OutboxEvent:
    return OutboxEvent(
        "msg_0123456789abcdefghijklmnop",
        "key_0123456789abcdef",
        url,
        "handoff.failed",
        BODY,
        attempts,
        created_at,
    )


def secret_free(outcome: Outcome) -> None:
    """The error for the store names what happened: never the secret, body or URL."""
    for private in (SECRET, SECRET.removeprefix("whsec_"), CANARY_SUMMARY, URL_CANARY, "Zo"):
        assert private not in outcome.error


# --- what reaches the receiver ------------------------------------------------------------------


def test_a_2xx_is_delivered_with_the_exact_body_and_verifiable_headers(receiver: Receiver) -> None:
    sender = Delivery(timeout=2)  # the real clock: the reference verifier checks the timestamp
    try:
        outcome = sender.deliver(event(receiver.url), SECRET)
    finally:
        sender.close()
    assert outcome == Outcome(Verdict.DELIVERED, 200)
    [request] = receiver.requests
    assert (request.method, request.path) == ("POST", "/hooks")
    assert request.body == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "msg_0123456789abcdefghijklmnop"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    Webhook(SECRET).verify(request.body, request.headers)  # raises if it does not verify
    assert SECRET not in str(request.headers)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_every_2xx_is_delivered(receiver: Receiver, delivery: Delivery, status: int) -> None:
    receiver.answer(Answer(status))
    assert delivery.deliver(event(receiver.url), SECRET) == Outcome(Verdict.DELIVERED, status)


def test_the_webhook_id_stays_and_the_timestamp_moves_across_attempts(
    receiver: Receiver, delivery: Delivery, clock: FakeClock
) -> None:
    receiver.answer(Answer(503))
    first = delivery.deliver(event(receiver.url), SECRET)
    clock.advance(first.retry_at - clock())  # type: ignore[operator]
    assert delivery.deliver(event(receiver.url, attempts=1), SECRET).verdict is Verdict.DELIVERED
    one, two = receiver.requests
    assert one.webhook_id == two.webhook_id == "msg_0123456789abcdefghijklmnop"
    assert int(two.headers["webhook-timestamp"]) - int(one.headers["webhook-timestamp"]) == 5
    for request in (one, two):  # each signed for its own timestamp
        moment = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), UTC)
        expected = Webhook(SECRET).sign(request.webhook_id, moment, request.body.decode())
        assert request.headers["webhook-signature"] == expected


# --- what each answer means -----------------------------------------------------------------------


def test_410_gives_up_because_the_receiver_says_it_is_gone(
    receiver: Receiver, delivery: Delivery
) -> None:
    receiver.answer(Answer(410))
    outcome = delivery.deliver(event(receiver.url), SECRET)
    assert (outcome.verdict, outcome.status, outcome.retry_at) == (Verdict.GIVE_UP, 410, None)
    assert "410" in outcome.error


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_and_is_never_followed(
    receiver: Receiver, delivery: Delivery, status: int
) -> None:
    receiver.answer(Answer(status, {"Location": "/elsewhere"}))
    outcome = delivery.deliver(event(receiver.url), SECRET)
    assert outcome == Outcome(
        Verdict.RETRY,
        status,
        f"HTTP {status}: redirects are not followed",
        START + timedelta(seconds=5),
    )
    assert [request.path for request in receiver.requests] == ["/hooks"]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_server_errors_and_throttling_are_retried_on_the_schedule(
    receiver: Receiver, delivery: Delivery, status: int
) -> None:
    receiver.answer(Answer(status))
    outcome = delivery.deliver(event(receiver.url, attempts=3), SECRET)
    # The 4th attempt failed: the 4th step, 10 minutes.
    retry_at = START + timedelta(minutes=10)
    assert outcome == Outcome(Verdict.RETRY, status, f"HTTP {status}", retry_at)


def test_retry_after_in_seconds_is_honoured(receiver: Receiver, delivery: Delivery) -> None:
    receiver.answer(Answer(429, {"Retry-After": "120"}))
    outcome = delivery.deliver(event(receiver.url), SECRET)
    assert outcome == Outcome(
        Verdict.RETRY, 429, "HTTP 429 (Retry-After 120 s)", START + timedelta(seconds=120)
    )


def test_retry_after_as_an_http_date_is_honoured(receiver: Receiver, delivery: Delivery) -> None:
    when = (START + timedelta(minutes=7)).replace(tzinfo=UTC)
    receiver.answer(Answer(503, {"Retry-After": format_datetime(when, usegmt=True)}))
    outcome = delivery.deliver(event(receiver.url), SECRET)
    assert outcome.retry_at == START + timedelta(minutes=7)
    assert outcome.error == "HTTP 503 (Retry-After 420 s)"


@pytest.mark.parametrize(
    ("header", "pause"),
    [
        ("1", timedelta(seconds=5)),  # shorter than the backoff: the backoff wins
        ("999999999999999", timedelta(hours=6)),  # bounded
        ("soon", timedelta(seconds=5)),  # unreadable: ignored
        ("Wed, 21 Oct 2015 07:28:00 GMT", timedelta(seconds=5)),  # in the past: no extra wait
    ],
)
def test_retry_after_is_bounded_and_never_shortens_the_backoff(
    receiver: Receiver, delivery: Delivery, header: str, pause: timedelta
) -> None:
    receiver.answer(Answer(429, {"Retry-After": header}))
    outcome = delivery.deliver(event(receiver.url), SECRET)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry_at == START + pause


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_client_errors_are_retried_a_few_times_then_given_up(
    receiver: Receiver, delivery: Delivery, status: int
) -> None:
    receiver.answer(Answer(status), Answer(status), Answer(status))
    verdicts = [delivery.deliver(event(receiver.url, attempts=n), SECRET).verdict for n in range(3)]
    assert verdicts == [Verdict.RETRY, Verdict.RETRY, Verdict.GIVE_UP]
    assert len(receiver.requests) == 3


def test_a_slow_receiver_times_out_and_is_retried(receiver: Receiver, clock: FakeClock) -> None:
    receiver.answer(Answer(200, delay=1.5))
    sender = Delivery(timeout=0.2, clock=clock, random=lambda: MIDDLE)
    started = time.monotonic()
    try:
        outcome = sender.deliver(event(receiver.url), SECRET)
    finally:
        sender.close()
    assert time.monotonic() - started < 1.2
    assert outcome == Outcome(
        Verdict.RETRY, None, "no answer within 0.2 s", START + timedelta(seconds=5)
    )


def test_a_receiver_that_is_down_is_retried(receiver: Receiver, delivery: Delivery) -> None:
    url = receiver.url
    receiver.stop()
    outcome = delivery.deliver(event(url), SECRET)
    assert outcome == Outcome(
        Verdict.RETRY, None, "connection failed (ConnectionError)", START + timedelta(seconds=5)
    )


@pytest.mark.parametrize("url", ["ai.example.test/hooks", "ftp://127.0.0.1/hooks", "http://"])
def test_a_url_no_retry_can_repair_is_given_up(delivery: Delivery, url: str) -> None:
    outcome = delivery.deliver(event(url), SECRET)
    assert (outcome.verdict, outcome.status) == (Verdict.GIVE_UP, None)
    assert outcome.error.startswith("the URL cannot be used")


def test_no_error_names_the_secret_the_body_or_the_url(
    receiver: Receiver, clock: FakeClock
) -> None:
    sender = Delivery(timeout=0.2, clock=clock, random=lambda: MIDDLE)
    url = f"{receiver.url}?token={URL_CANARY}"
    receiver.answer(
        Answer(500),
        Answer(429, {"Retry-After": "30"}),
        Answer(302, {"Location": f"/x?{URL_CANARY}"}),
        Answer(404),
        Answer(410),
        Answer(200, delay=1),
    )
    outcomes = [sender.deliver(event(url, attempts=2), SECRET) for _ in range(6)]
    receiver.stop()
    outcomes.append(sender.deliver(event(url), SECRET))
    outcomes.append(sender.deliver(event(f"ftp://127.0.0.1/?{URL_CANARY}"), SECRET))
    sender.close()
    assert all(outcome.error for outcome in outcomes)
    for outcome in outcomes:
        secret_free(outcome)


# --- the schedule --------------------------------------------------------------------------------


def test_the_schedule_backs_off_exponentially_then_every_six_hours() -> None:
    schedule = Schedule()
    pauses = [schedule.pause(attempt, MIDDLE) for attempt in range(1, 10)]
    assert pauses == [
        timedelta(seconds=5),
        timedelta(seconds=30),
        timedelta(minutes=2),
        timedelta(minutes=10),
        timedelta(minutes=30),
        timedelta(hours=1),
        timedelta(hours=3),
        timedelta(hours=6),
        timedelta(hours=6),
    ]


def test_the_jitter_stays_within_a_fifth_either_way() -> None:
    schedule = Schedule()
    assert schedule.pause(2, 0.0) == timedelta(seconds=24)
    longest = schedule.pause(2, 0.999999)
    assert longest == pytest.approx(timedelta(seconds=36), abs=timedelta(milliseconds=1))


def test_retries_stop_three_days_after_the_event_was_written(
    receiver: Receiver, clock: FakeClock
) -> None:
    receiver.default = Answer(503)
    sender = Delivery(timeout=2, clock=clock, random=lambda: MIDDLE)
    attempts = 0
    outcome = sender.deliver(event(receiver.url), SECRET)
    while outcome.verdict is Verdict.RETRY:
        assert outcome.retry_at is not None
        clock.advance(outcome.retry_at - clock())
        attempts += 1
        outcome = sender.deliver(event(receiver.url, attempts=attempts), SECRET)
    sender.close()
    assert outcome.verdict is Verdict.GIVE_UP
    assert outcome.error == "HTTP 503; gave up: not delivered in 3 days"
    assert clock() <= START + timedelta(days=3)
    assert clock() + timedelta(hours=6) > START + timedelta(days=3)
    # 7 steps take 4 h 42 min 35 s; then every 6 hours until the third day is over.
    assert len(receiver.requests) == attempts + 1 == 19


def test_retry_after_dates_and_seconds_parse() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0)
    assert parse_retry_after("120", now) == timedelta(seconds=120)
    assert parse_retry_after(" 7 ", now) == timedelta(seconds=7)
    assert parse_retry_after("Tue, 01 Dec 2026 12:01:00 GMT", now) == timedelta(minutes=1)
    assert parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now) == timedelta(0)
    for unreadable in (None, "", "soon", "١٢٠", "-5", "1.5"):
        assert parse_retry_after(unreadable, now) is None


def test_the_default_clock_is_the_stores() -> None:
    assert Delivery().clock is now_utc
    assert Delivery().timeout == 10
