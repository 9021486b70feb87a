"""Standard Webhooks signatures: the spec's golden vector, the reference library as an oracle."""

from __future__ import annotations

import base64
import json
import traceback
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from sipguard.notify.model import OutboxEvent, webhook_secret
from sipguard.notify.signing import headers, sign, unix_seconds

# The reference library's own vector (standard-webhooks, libraries/python/tests/test_webhooks.py).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = webhook_secret("Canary-Secret-Key-" + "k" * 32, "key_0123456789abcdef")


BODY = b'{"type":"handoff.transferred","data":{}}'


def event(body: bytes = BODY, **extra: object) -> OutboxEvent:
    values: dict[str, object] = {
        "id": "msg_0123456789abcdefghijklmnop",
        "api_key_id": "key_0123456789abcdef",
        "url": "https://ai.example.test/hooks",
        "event_type": "handoff.transferred",
        "body": body,
        "attempts": 0,
        "created_at": datetime(2026, 1, 2, 3, 4, 5),
        **extra,
    }
    return OutboxEvent(**values)  # type: ignore[arg-type]


def now() -> datetime:
    """The reference verifier accepts ±5 minutes around the real time, so sign at it."""
    return datetime.now(UTC).replace(tzinfo=None)


def test_the_golden_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_reference_library_signs_the_vector_alike() -> None:
    moment = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)
    theirs = Webhook(VECTOR_SECRET).sign(VECTOR_ID, moment, VECTOR_BODY.decode())
    assert theirs == VECTOR_SIGNATURE


def test_headers_carry_the_event_id_this_attempts_time_and_the_signature() -> None:
    moment = datetime(2021, 2, 25, 15, 2, 10)  # naive UTC: 1614265330
    message = event(body=VECTOR_BODY, id=VECTOR_ID)
    assert headers(VECTOR_SECRET, message, moment) == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
        "content-type": "application/json",
    }
    aware = moment.replace(tzinfo=UTC)
    assert headers(VECTOR_SECRET, message, aware) == headers(VECTOR_SECRET, message, moment)
    assert unix_seconds(moment + timedelta(microseconds=999_999)) == VECTOR_TIMESTAMP


def test_our_signatures_verify_with_the_reference_library() -> None:
    body = json.dumps({"type": "handoff.failed", "timestamp": "2026-01-02T03:04:05Z"}).encode()
    message = event(body=body)
    sent = headers(SECRET, message, now())
    assert Webhook(SECRET).verify(body, sent) == json.loads(body)


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-id": "msg_0123456789abcdefghijklmnoq"},
        {"webhook-timestamp": "TIMESTAMP+1"},
        {"body": b'{"type":"handoff.transferred","data":{} }'},
        {"body": b'{"type":"handoff.failed","data":{}}'},
    ],
    ids=["id", "timestamp", "body whitespace", "body"],
)
def test_a_changed_id_timestamp_or_body_fails_the_reference_verification(
    change: dict[str, object],
) -> None:
    message = event()
    sent = headers(SECRET, message, now())
    Webhook(SECRET).verify(message.body, sent)  # unchanged, it verifies
    body = change.pop("body", message.body)
    tampered = {**sent, **change}
    if tampered["webhook-timestamp"] == "TIMESTAMP+1":
        tampered["webhook-timestamp"] = str(int(sent["webhook-timestamp"]) + 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, tampered)  # type: ignore[arg-type]


def test_another_keys_secret_does_not_verify() -> None:
    message = event()
    sent = headers(SECRET, message, now())
    other = webhook_secret("Canary-Secret-Key-" + "k" * 32, "key_fedcba9876543210")
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(message.body, sent)


@settings(max_examples=60, deadline=None)
@given(
    msg_id=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=40),
    body=st.binary(max_size=300).map(lambda raw: base64.b64encode(raw)),
    key=st.binary(min_size=24, max_size=64),
    timestamp=st.integers(min_value=0, max_value=2**33),
)
def test_the_reference_library_agrees_on_any_id_body_key_and_time(
    msg_id: str, body: bytes, key: bytes, timestamp: int
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    moment = datetime.fromtimestamp(timestamp, UTC)
    assert sign(secret, msg_id, timestamp, body) == Webhook(secret).sign(
        msg_id, moment, body.decode()
    )


@pytest.mark.parametrize("msg_id", ["", "msg.1", "msg_1."])
def test_an_id_with_a_dot_or_none_is_refused(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook-id"):
        sign(SECRET, msg_id, VECTOR_TIMESTAMP, b"{}")


@pytest.mark.parametrize("timestamp", [1614265330.5, "1614265330.0", "1614265330", -1, True])
def test_a_timestamp_that_is_not_whole_unix_seconds_is_refused(timestamp: object) -> None:
    with pytest.raises(ValueError, match="webhook-timestamp"):
        sign(SECRET, VECTOR_ID, timestamp, b"{}")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_not base64!",
        "whsec_",
        "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # an ed25519 key's prefix
    ],
)
def test_an_unusable_secret_is_refused_without_echoing_it(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret") as caught:
        sign(secret, VECTOR_ID, VECTOR_TIMESTAMP, b"{}")
    tail = secret.removeprefix("whsec_")
    # Neither the message nor a chained exception (base64's own error) carries the secret.
    shown = "".join(traceback.format_exception(caught.value))
    assert not tail or tail not in shown
