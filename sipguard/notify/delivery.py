"""Deliver one outcome webhook: POST it signed, judge the receiver's answer, schedule the retry.

Per Standard Webhooks (https://www.standardwebhooks.com/, "Delivery behaviour"): a 2xx is
success; a 3xx is a failure and is not followed; 410 means the endpoint is gone, so we give up;
429, 408, 5xx, timeouts and connection errors are retried with exponential backoff and jitter,
honouring `Retry-After`; any other 4xx is retried a few times, then given up. The body is sent
exactly as stored and signed; the error kept for the store names what happened, never the
secret, the body, the URL or the receiver's answer.
"""

from __future__ import annotations

import enum
import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import requests

from sipguard.notify.model import OutboxEvent
from sipguard.notify.signing import CONTENT_TYPE, headers
from sipguard.store.database import UtcClock, now_utc

DEFAULT_TIMEOUT = 10.0  # seconds, WEBHOOK_TIMEOUT_SECONDS
USER_AGENT = "plivo-sip-guard-webhooks/1"
# Statuses that say "later": throttled, timed out on the receiver's side, or a server error.
_TRANSIENT = frozenset({408, 425, 429})
# A Retry-After this large is not taken at its word (it would park the event for good).
_MAX_RETRY_AFTER_DIGITS = 9


class Verdict(enum.Enum):
    """What one attempt means for the event."""

    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt: what to record in the outbox."""

    verdict: Verdict
    status: int | None  # the receiver's HTTP status; None when no answer came back
    error: str = ""  # why it failed; empty when delivered
    retry_at: datetime | None = None  # naive UTC; set exactly when the verdict is RETRY


@dataclass(frozen=True)
class Schedule:
    """When to try a failed event again, and when to stop.

    After attempt n the pause is steps[n-1] (then `every`), scaled by a random factor within
    ±`jitter` so that events failing together do not come back together. A Retry-After longer
    than the pause wins, up to `max_retry_after`. An event not delivered within `give_up_after`
    of its creation is given up, and so is one whose receiver answered a client error (4xx
    other than 408/425/429) `client_error_attempts` times in a row of attempts.
    """

    steps: tuple[timedelta, ...] = (
        timedelta(seconds=5),
        timedelta(seconds=30),
        timedelta(minutes=2),
        timedelta(minutes=10),
        timedelta(minutes=30),
        timedelta(hours=1),
        timedelta(hours=3),
    )
    every: timedelta = timedelta(hours=6)
    give_up_after: timedelta = timedelta(days=3)
    jitter: float = 0.2
    max_retry_after: timedelta = timedelta(hours=6)
    client_error_attempts: int = 3

    def pause(self, attempt: int, draw: float) -> timedelta:
        """Return the pause after attempt number `attempt` (1 = the first) for a draw in [0, 1)."""
        base = self.steps[attempt - 1] if attempt <= len(self.steps) else self.every
        return base * (1 + self.jitter * (2 * draw - 1))

    def next_attempt(
        self,
        event: OutboxEvent,
        now: datetime,
        draw: float,
        retry_after: timedelta | None = None,
    ) -> datetime | None:
        """Return when to try `event` again after its current attempt failed, or None: give up."""
        pause = self.pause(event.attempts + 1, draw)
        if retry_after is not None:
            pause = max(pause, min(retry_after, self.max_retry_after))
        at = now + pause
        return at if at <= event.created_at + self.give_up_after else None


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Return the wait a Retry-After header asks for (seconds or an HTTP date), or None.

    `now` is naive UTC. A date in the past is no wait; an unreadable value is ignored.
    """
    text = (value or "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        if len(text) > _MAX_RETRY_AFTER_DIGITS:
            text = "9" * _MAX_RETRY_AFTER_DIGITS  # bounded by the schedule's max anyway
        return timedelta(seconds=int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(when - now.replace(tzinfo=UTC), timedelta(0))


def _describe_wait(wait: timedelta) -> str:
    return f"{int(wait.total_seconds())} s"


@dataclass
class Delivery:
    """Sends events over one requests Session; time and randomness are injectable."""

    timeout: float = DEFAULT_TIMEOUT
    schedule: Schedule = field(default_factory=Schedule)
    clock: UtcClock = now_utc
    random: Callable[[], float] = _random.random
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def deliver(self, event: OutboxEvent, secret: str | None, url: str | None = None) -> Outcome:
        """POST `event` to `url` (else its own), signed with `secret`, and return what to record.

        Without a secret it goes unsigned (a Slack incoming webhook checks no signature).
        """
        signed = headers(secret, event, self.clock()) if secret is not None else {}
        sent = {"content-type": CONTENT_TYPE, **signed, "user-agent": USER_AGENT}
        try:
            response = self.session.post(
                url or event.url,
                data=event.body,
                headers=sent,
                timeout=self.timeout,
                allow_redirects=False,  # a 3xx is a failure, never followed
                stream=True,  # the answer's body is never read: only its status counts
            )
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as exc:  # an address no retry can repair
            return Outcome(Verdict.GIVE_UP, None, f"the URL cannot be used ({type(exc).__name__})")
        except requests.exceptions.ConnectTimeout:
            return self._retry(event, None, f"could not connect within {self.timeout:g} s")
        except requests.exceptions.Timeout:
            return self._retry(event, None, f"no answer within {self.timeout:g} s")
        except requests.exceptions.ConnectionError as exc:
            return self._retry(event, None, f"connection failed ({type(exc).__name__})")
        except requests.exceptions.RequestException as exc:
            return self._retry(event, None, f"request failed ({type(exc).__name__})")
        with response:
            return self._judge(event, response.status_code, response.headers.get("retry-after"))

    def close(self) -> None:
        """Close the session's pooled connections."""
        self.session.close()

    def _judge(self, event: OutboxEvent, status: int, retry_after: str | None) -> Outcome:
        if 200 <= status < 300:
            return Outcome(Verdict.DELIVERED, status)
        if status == 410:
            return Outcome(Verdict.GIVE_UP, status, "HTTP 410: the receiver says it is gone")
        if 300 <= status < 400:
            return self._retry(event, status, f"HTTP {status}: redirects are not followed")
        if status in _TRANSIENT or 500 <= status < 600:
            wait = parse_retry_after(retry_after, self.clock())
            text = f"HTTP {status}" + (f" (Retry-After {_describe_wait(wait)})" if wait else "")
            return self._retry(event, status, text, wait)
        if 400 <= status < 500:
            attempt = event.attempts + 1
            if attempt >= self.schedule.client_error_attempts:
                return Outcome(
                    Verdict.GIVE_UP,
                    status,
                    f"HTTP {status}: gave up after {attempt} attempts (a client error)",
                )
            return self._retry(event, status, f"HTTP {status}")
        return self._retry(event, status, f"HTTP {status}: not a status webhooks expect")

    def _retry(
        self,
        event: OutboxEvent,
        status: int | None,
        error: str,
        retry_after: timedelta | None = None,
    ) -> Outcome:
        at = self.schedule.next_attempt(event, self.clock(), self.random(), retry_after)
        if at is None:
            days = self.schedule.give_up_after / timedelta(days=1)
            error = f"{error}; gave up: not delivered in {days:g} days"
            return Outcome(Verdict.GIVE_UP, status, error)
        return Outcome(Verdict.RETRY, status, error, at)
