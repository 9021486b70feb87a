"""What an outcome webhook is before it is sent, and where it waits: the outbox's contract.

The store keeps the events (written in the same transaction as the state change they report);
the delivery worker claims the due ones, signs them per Standard Webhooks and records the result.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

SECRET_PREFIX = "whsec_"
_SECRET_CONTEXT = b"sipguard webhook secret\x00"


@dataclass(frozen=True)
class OutboxEvent:
    """One webhook to deliver: its stable `webhook-id`, where to, and the exact bytes to send."""

    id: str  # the webhook-id: "msg_" + 26 characters of [0-9a-z]; the same on every retry
    api_key_id: str  # whose secret signs it
    url: str
    event_type: str  # e.g. "handoff.transferred"
    body: bytes  # the JSON document, exactly as it is signed and sent
    attempts: int  # deliveries tried before this one
    created_at: datetime  # naive UTC, like every time in the store


class Outbox(Protocol):
    """The store's side of delivery: claim due events under a lease, record each result."""

    def claim_due(self, limit: int, lease: timedelta) -> list[OutboxEvent]:
        """Return up to `limit` undelivered events whose time has come, leased to the caller.

        A leased event is not returned to another claimer until the lease runs out, so two
        workers or instances never deliver one event at the same time.
        """
        ...

    def mark_delivered(self, event_id: str, status: int) -> None:
        """Record that the receiver accepted the event (2xx); it is never sent again."""
        ...

    def mark_failed(
        self, event_id: str, retry_at: datetime | None, status: int | None, error: str
    ) -> None:
        """Record a failed attempt: retry at `retry_at` (naive UTC), or give up when None."""
        ...


def webhook_secret(secret_key: str, api_key_id: str) -> str:
    """Return the `whsec_` secret that signs the webhooks sent for one API key.

    Derived from SECRET_KEY and the key's id, so it is never stored: every instance computes the
    same one, and rotating SECRET_KEY rotates every webhook secret.
    """
    digest = hmac.new(
        secret_key.encode(), _SECRET_CONTEXT + api_key_id.encode(), hashlib.sha256
    ).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()
