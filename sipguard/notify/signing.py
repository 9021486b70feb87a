"""Standard Webhooks v1 signatures: what the AI's receiver checks on every outcome webhook.

The signed content is "{webhook-id}.{webhook-timestamp}.{body}", HMAC-SHA256 keyed with the
base64-decoded part of the `whsec_` secret, sent as "v1,<base64>" in `webhook-signature`
(https://www.standardwebhooks.com/, spec "Signature scheme"). The body is signed exactly as it is
sent: never re-serialised.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import UTC, datetime

from sipguard.notify.model import SECRET_PREFIX, OutboxEvent

VERSION = "v1"
CONTENT_TYPE = "application/json"


def _key(secret: str) -> bytes:
    """Return the HMAC key a `whsec_` secret stands for; the secret is never in the message."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret must start with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a webhook secret must be {SECRET_PREFIX} followed by base64") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def check_secret(secret: str) -> None:
    """Check a `whsec_` secret can sign (raises ValueError saying why, never echoing it)."""
    _key(secret)


def _timestamp(timestamp: int) -> str:
    # bool is an int, and a float or a numeric string with "." would break the signed layout.
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("webhook-timestamp must be whole, non-negative Unix seconds")
    return str(timestamp)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value ("v1,<base64>") of one message."""
    if not msg_id or "." in msg_id:
        # "." separates the signed parts, so an id holding one could forge another split.
        raise ValueError("webhook-id must be non-empty and must not contain '.'")
    content = f"{msg_id}.{_timestamp(timestamp)}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode()}"


def unix_seconds(now: datetime) -> int:
    """Return whole Unix seconds of `now` (a naive datetime is UTC, the store's convention)."""
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return int(aware.timestamp())


def headers(secret: str, event: OutboxEvent, now: datetime) -> dict[str, str]:
    """Return the headers of one delivery attempt of `event`, signed at `now`.

    `webhook-id` is the event's id, the same on every retry (the receiver's idempotency key);
    `webhook-timestamp` is this attempt's time.
    """
    timestamp = unix_seconds(now)
    return {
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, event.id, timestamp, event.body),
        "content-type": CONTENT_TYPE,
    }
