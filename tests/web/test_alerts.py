"""Pushed alerts: raised by the callbacks (a lockout, a burst of refused signatures, SIP calls
without SIPAuthType) and by agent quarantines, one per condition and subject per window, queued
in the outbox and delivered by the worker, signed (generic webhook) or as Slack's {"text"}."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app import create_app
from devtools.receiver import Answer, Receiver
from sipguard.calls.agents import Quarantine
from sipguard.errors import ConfigError
from sipguard.notify import alerts
from sipguard.notify.delivery import Delivery
from sipguard.notify.worker import Worker
from sipguard.settings import load_settings
from sipguard.store import Alerting, Store, now_utc, webhook_outbox
from sipguard.store.alerts import window_start
from tests.support.config import ALL_CANARIES, SECRET_KEY, TOKEN
from tests.support.outbox import FakeClock
from tests.support.signing import SignedPost, hangup, inbound, make_signed_post

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"alert-signing-key-0123456789abcd").decode()
SLACK_URL = "https://hooks.slack.example.test/services/T000/B000/Canary-Slack-Token-XYZ"
HOOK_URL = "https://alerts.example.test/sipguard"
PHONE = "+14155550123"
LOCKED_IP = "198.51.100.7"


def alert_config(app_config: dict[str, str], slack: str, hook: str) -> dict[str, str]:
    return {
        **app_config,
        "ALERT_SLACK_URL": slack,
        "ALERT_WEBHOOK_URL": hook,
        "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ALERT_REFUSED_PER_MINUTE": "20",
    }


@pytest.fixture
def alerted(app_config: dict[str, str]) -> Iterator[Flask]:
    application = create_app(alert_config(app_config, SLACK_URL, HOOK_URL))
    yield application
    application.extensions["sipguard"].store.dispose()


@pytest.fixture
def post(alerted: Flask) -> SignedPost:
    return make_signed_post(alerted.test_client())


def _store(app: Flask) -> Store:
    store: Store = app.extensions["sipguard"].store
    return store


def _queued(store: Store) -> list[dict[str, Any]]:
    return store.query(select(webhook_outbox).order_by(webhook_outbox.c.created_at))


def _conditions(store: Store) -> list[tuple[str, str]]:
    """(owner, event type) of every alert queued, sorted."""
    return sorted((row["api_key_id"], row["event_type"]) for row in _queued(store))


def _generic(store: Store) -> dict[str, Any]:
    """The one generic webhook's document queued."""
    (row,) = [row for row in _queued(store) if row["api_key_id"] == alerts.WEBHOOK]
    document: dict[str, Any] = json.loads(row["body"])
    return document


def _both(condition: str) -> list[tuple[str, str]]:
    return [(alerts.SLACK, f"alert.{condition}"), (alerts.WEBHOOK, f"alert.{condition}")]


# -- one per condition and subject per window ----------------------------------------------------


def test_a_flood_of_refused_signatures_raises_one_alert(alerted: Flask, post: SignedPost) -> None:
    for _ in range(500):
        response = post("/hangup", hangup(), token="forged-token-forged-token-0000")
        assert response.status_code == 403
    store = _store(alerted)
    assert _conditions(store) == _both(alerts.REFUSED_BURST)
    data = _generic(store)["data"]
    assert data["subject"] == "callbacks" and data["threshold"] == 20
    assert data["refused"] >= 20 and data["reason"] == "V3 signature does not match"


def test_refusals_under_the_threshold_raise_nothing(alerted: Flask, post: SignedPost) -> None:
    for _ in range(19):
        post("/hangup", hangup(), token="forged-token-forged-token-0000")
    assert _queued(_store(alerted)) == []


def test_a_probable_lockout_raises_one_alert_per_ip(alerted: Flask, post: SignedPost) -> None:
    failed = {"HangupCause": "sip_auth_failed", "HangupCauseName": "sip_auth_failed"}
    for _ in range(9):
        post("/hangup", hangup(SIPSourceIP=LOCKED_IP, HangupCauseCode="4210", **failed))
    assert _queued(_store(alerted)) == []  # nine failures: no lockout yet
    for _ in range(5):
        post("/hangup", hangup(SIPSourceIP=LOCKED_IP, HangupCauseCode="4210", **failed))
    post("/hangup", hangup(SIPSourceIP="198.51.100.8", HangupCauseCode="4210", **failed))
    store = _store(alerted)
    assert _conditions(store) == _both(alerts.LOCKOUT)
    body = _generic(store)
    assert body["type"] == "alert.source_locked_out"
    assert (body["data"]["ip"], body["data"]["failures"]) == (LOCKED_IP, 10)


def test_sip_calls_without_sip_auth_raise_one_alert_and_count(
    alerted: Flask, post: SignedPost
) -> None:
    unauthenticated = {"SIPAuthType": "", "SIPAuthUser": "", "From": f"sip:{PHONE}@203.0.113.9"}
    for _ in range(5):
        assert post("/answer", inbound(**unauthenticated)).status_code == 200
    # A rule that takes such calls on purpose is counted, not alerted.
    legacy = {**unauthenticated, "From": "sip:pbx@legacy.example.net"}
    post("/answer", inbound(**legacy))
    store = _store(alerted)
    assert _conditions(store) == _both(alerts.AUTH_NOT_RUNNING)
    body = _generic(store)
    assert body["data"]["subject"] == "/answer (unauthenticated-sip)"


def test_the_not_running_counter_counts_every_sip_call_without_sip_auth(
    alerted: Flask, post: SignedPost
) -> None:
    from sipguard.monitoring import metrics

    before = metrics.SIP_AUTH_NOT_RUNNING._value.get()
    for form in ({"SIPAuthType": ""}, {"SIPAuthType": "", "From": "sip:pbx@legacy.example.net"}):
        post("/answer", inbound(**form))
    post("/answer", inbound(SIPAuthType="ip_acl", SIPSourceIP="203.0.113.10"))  # not counted
    assert metrics.SIP_AUTH_NOT_RUNNING._value.get() - before == 2


def test_a_quarantine_and_its_release_each_raise_an_alert(alerted: Flask) -> None:
    store = _store(alerted)
    policy = Quarantine()
    for _ in range(policy.after + 2):
        store.agent_failed("alice", "sip_auth_failed", policy)
    assert _conditions(store) == _both(alerts.QUARANTINED)
    store.release_agent("alice")
    assert _conditions(store) == sorted(_both(alerts.QUARANTINED) + _both(alerts.RELEASED))


def test_a_new_window_raises_the_condition_again(app_config: dict[str, str]) -> None:
    clock = FakeClock(now_utc())
    store = Store(app_config["DATABASE_URL"], clock=clock)
    try:
        store.upgrade()
        store.alerting = Alerting(receivers=(alerts.WEBHOOK,), window=timedelta(minutes=15))
        alert = alerts.auth_not_running("/answer (unauthenticated-sip)")
        assert store.raise_alert(alert)
        assert not store.raise_alert(alert)
        assert not store.raise_alert(alerts.auth_not_running("/answer (unauthenticated-sip)"))
        assert store.raise_alert(alerts.auth_not_running("another route"))
        clock.advance(timedelta(minutes=15))
        assert store.raise_alert(alert)
        assert len(_queued(store)) == 3
    finally:
        store.dispose()


def test_without_a_receiver_nothing_is_raised_or_stored(
    app: Flask, signed_post: SignedPost
) -> None:
    for _ in range(30):
        signed_post("/hangup", hangup(), token="forged-token-forged-token-0000")
    store = _store(app)
    assert not store.alerting.active
    assert _queued(store) == []


@pytest.mark.postgres
def test_two_instances_racing_on_postgresql_raise_it_once(postgres_url: str) -> None:
    stores = [Store(postgres_url), Store(postgres_url)]
    try:
        stores[0].upgrade()
        for store in stores:
            store.alerting = Alerting(receivers=alerts.RECEIVERS)
        threads, each = 8, 25
        barrier = threading.Barrier(threads)
        raised: list[bool] = []
        lock = threading.Lock()

        def run(index: int) -> None:
            store = stores[index % 2]
            barrier.wait()
            for _ in range(each):
                # Each call a fresh alert object, as each callback builds its own; the memo of
                # one Store cannot hide the other's.
                result = store._run(
                    lambda conn: store._queue_alert(
                        conn, store.now(), alerts.lockout(LOCKED_IP, store.now(), 10)
                    )
                )
                with lock:
                    raised.append(result)

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert len(raised) == threads * each
        assert raised.count(True) in (1, 2)  # two only if the race straddled a window's edge
        assert len(_queued(stores[0])) == 2 * raised.count(True)
    finally:
        for store in stores:
            store.dispose()


# -- what an alert says, and never says ----------------------------------------------------------


def test_no_phone_number_password_or_token_in_any_alert(alerted: Flask, post: SignedPost) -> None:
    failed = {"HangupCause": "sip_auth_failed", "HangupCauseName": "sip_auth_failed"}
    for _ in range(10):
        post(
            "/hangup",
            hangup(SIPSourceIP=LOCKED_IP, HangupCauseCode="4210", From=PHONE, To=PHONE, **failed),
        )
    for _ in range(25):
        post("/hangup", hangup(From=PHONE), token="forged-token-forged-token-0000")
    post("/answer", inbound(SIPAuthType="", From=f"sip:{PHONE}@203.0.113.9", To=PHONE))
    for _ in range(Quarantine().after):
        fields = inbound(CallStatus="in-progress", DialStatus="failed", DialHangupCause="4240")
        post("/dial-action?group=support&attempt=0", {**fields, "From": PHONE, "To": PHONE})
    _store(alerted).release_agent("alice")
    rows = _queued(_store(alerted))
    assert {row["event_type"] for row in rows} == {
        f"alert.{condition}" for condition in alerts.CONDITIONS
    }
    forbidden = (PHONE, "14155550123", TOKEN, SECRET_KEY, WEBHOOK_SECRET, SLACK_URL, *ALL_CANARIES)
    for row in rows:
        stored = json.dumps({k: str(v) for k, v in row.items()})
        for value in forbidden:
            assert value not in stored


def test_the_slack_body_is_only_text(alerted: Flask) -> None:
    _store(alerted).raise_alert(alerts.lockout(LOCKED_IP, now_utc(), 10))
    slack = [
        json.loads(r["body"]) for r in _queued(_store(alerted)) if r["api_key_id"] == alerts.SLACK
    ]
    assert len(slack) == 1
    assert list(slack[0]) == ["text"]
    assert slack[0]["text"].startswith("SIP Guard: Plivo has probably locked out source IP")


# -- delivery ------------------------------------------------------------------------------------


def test_the_receiver_down_then_up_gets_every_alert_once_signed(
    app_config: dict[str, str],
) -> None:
    with Receiver() as receiver:
        slack_url, hook_url = receiver.url + "/slack", receiver.url + "/generic"
        application = create_app(alert_config(app_config, slack_url, hook_url))
        raised = application.extensions["sipguard"].store
        for _ in range(Quarantine().after):
            raised.agent_failed("bob", "sip_auth_timeout", Quarantine())
        raised.release_agent("bob")
        raised.raise_alert(alerts.lockout(LOCKED_IP, now_utc(), 10))
        # The worker's side runs on a clock of its own, from now on: retries without sleeping.
        clock = FakeClock(now_utc() + timedelta(seconds=1))
        store = Store(app_config["DATABASE_URL"], clock=clock)
        try:
            queued = _queued(raised)
            assert len(queued) == 6
            ids = sorted(row["id"] for row in queued if row["api_key_id"] == alerts.WEBHOOK)
            slack = sorted(
                bytes(row["body"]) for row in queued if row["api_key_id"] == alerts.SLACK
            )
            settings = application.extensions["sipguard"].settings
            worker = Worker(
                store,
                Delivery(timeout=2, clock=clock, random=lambda: 0.5),
                lambda key_id: pytest.fail("no handoff webhook here"),
                receivers=settings.alert_receivers(),
            )
            receiver.stop()  # down: every attempt is refused a connection
            assert worker.run_once() == 6
            receiver.start()
            receiver.answer(Answer(503))  # then one more failure, on the way up
            clock.advance(timedelta(seconds=10))
            worker.run_once()
            clock.advance(timedelta(minutes=1))
            worker.run_once()
            delivered = receiver.delivered
            generic = [request for request in delivered if request.path == "/hooks/generic"]
            assert sorted(request.webhook_id for request in generic) == ids
            assert sorted(r.body for r in delivered if r.path == "/hooks/slack") == slack
            assert store.claim_due(100, timedelta(seconds=30)) == []
            for request in delivered:
                if request.path == "/hooks/generic":
                    body = Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
                    assert body["type"].startswith("alert.")
                else:
                    assert request.path == "/hooks/slack"
                    assert "webhook-signature" not in request.headers
                    assert list(json.loads(request.body)) == ["text"]
        finally:
            store.dispose()
            raised.dispose()


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ALERT_WEBHOOK_URL": HOOK_URL}, "ALERT_WEBHOOK_URL and ALERT_WEBHOOK_SECRET go together"),
        ({"ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET}, "go together"),
        (
            {"ALERT_WEBHOOK_URL": HOOK_URL, "ALERT_WEBHOOK_SECRET": "hunter2"},
            "must start with whsec_",
        ),
        (
            {"ALERT_SLACK_URL": "http://hooks.example.test/x"},
            "ALERT_SLACK_URL must be an https URL",
        ),
        ({"ALERT_WINDOW_SECONDS": "30"}, "ALERT_WINDOW_SECONDS must be at least 60"),
        ({"ALERT_REFUSED_PER_MINUTE": "0"}, "must be at least 1"),
    ],
)
def test_a_bad_alert_setting_is_refused_without_echoing_it(
    app_config: dict[str, str], tmp_path: Any, extra: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**app_config, **extra}, tmp_path)
    assert message in caught.value.message
    assert (
        "hunter2" not in caught.value.message and "hooks.example.test" not in caught.value.message
    )


def test_the_window_starts_on_fixed_boundaries() -> None:
    now = now_utc().replace(hour=10, minute=7, second=3, microsecond=5)
    assert window_start(now, timedelta(minutes=15)) == now.replace(
        minute=0, second=0, microsecond=0
    )
