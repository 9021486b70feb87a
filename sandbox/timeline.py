"""What happened to a sandbox call, in order: readable text and JSON, never a credential.

Events carry what a user needs to see (auth decision, each callback and its answer, each dial
leg and its cause) and nothing Plivo keeps private: SIP credentials are never in CDRs or
callbacks (https://www.plivo.com/docs/voice/concepts/sip-authentication, Security), so no
digest header, no password, no `sipAuthUsername`/`sipAuthPassword` from the XML; query values
that look like tokens are masked in URLs (the handoff URL's token is a bearer capability).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

# Query parameters whose values are masked: tokens, signatures, secrets, and the handoff URL
# the app gives the AI agent (it carries a bearer token).
_SECRET_NAME = re.compile(r"token|sig|pass|secret|key|auth|handoff", re.IGNORECASE)


MAX_ADVANCE = timedelta(days=366)  # one step of the clock; lockouts need 60 s


def system_now() -> datetime:
    """Return the system's current UTC time (what a sandbox clock starts from)."""
    return datetime.now(UTC)


class SandboxClock:
    """The sandbox's time: the system clock (or a fixed start) plus what `advance` added.

    Lockouts and nonces read it, so a test or the demo moves time on instead of sleeping.
    """

    def __init__(self, start: datetime | None = None, source: Callable[[], datetime] = system_now):
        self._fixed = start
        self._source = source
        self._offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """Return the sandbox's current time."""
        with self._lock:
            base = self._fixed if self._fixed is not None else self._source()
            return base + self._offset

    def advance(self, seconds: float) -> datetime:
        """Move time forward (never back, at most MAX_ADVANCE at once); return the new time."""
        if not (isinstance(seconds, int | float) and math.isfinite(seconds)):
            raise ValueError("advance by a finite number of seconds")
        if not 0 <= seconds <= MAX_ADVANCE.total_seconds():
            raise ValueError(f"advance by 0 to {MAX_ADVANCE.days} days of seconds")
        with self._lock:
            base = self._fixed if self._fixed is not None else self._source()
            offset = self._offset + timedelta(seconds=seconds)
            moved = base + offset  # raises OverflowError before anything changes
            self._offset = offset
        return moved


def safe_url(url: str | None) -> str:
    """Return `url` for display: no user:password@, no #fragment, token-like values masked.

    A query that does not read as plain ``k=v&k=v`` (``;`` separators, say) is masked whole.
    """
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        return "[unreadable URL]"
    if ";" in parts.query:
        query = "…"
    else:
        query = "&".join(
            f"{quote(key)}=" + ("…" if _SECRET_NAME.search(key) else quote(value, safe="/:@"))
            for key, value in pairs
        )
    return urlunsplit(parts._replace(netloc=host, query=query, fragment=""))


_SIP_PASSWORD = re.compile(r"^(sips?:[^:@;]+):[^@]*@", re.IGNORECASE)


def safe_address(address: str) -> str:
    """Return a SIP URI for display without a password in its user part (sip:u:pw@h)."""
    return _SIP_PASSWORD.sub(r"\1@", address)


@dataclass(frozen=True)
class Event:
    """One step of a call, `offset` seconds into it (simulated time)."""

    offset: float
    kind: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the event for JSON output."""
        return {"t": round(self.offset, 3), "kind": self.kind, "text": self.text, **self.data}


def render(header: str, events: list[Event]) -> str:
    """Lay out a call's events as aligned text lines under `header`."""
    lines = [header]
    for event in events:
        lines.append(f"  +{event.offset:8.3f}s  {event.kind:<9} {event.text}")
    return "\n".join(lines)
