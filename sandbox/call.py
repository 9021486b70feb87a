"""One call the sandbox carries: its parties, its state, its timeline and how it ended.

A call's state moves ringing → in-progress → (parked ⇄ in-progress) → ended. Parking (the
simulated AI agent holds the call), claiming a parked call (a Transfer or the caller's hangup)
and ending happen under the call's own lock, since the REST API and the call's thread race.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.account import Application
from sandbox.timeline import Event, render, safe_address

# Calls are cut at 24 h (docs/plivo.md, XML); longer durations in XML or requests are clamped.
MAX_CALL_SECONDS = 86_400


@dataclass(frozen=True)
class Ending:
    """How a call ends: its hangup code (None: no code), CallStatus, HangupSource and cause.

    `cause` names the cause when the code alone does not (a leg's "No Answer" has no code).
    """

    code: int | None
    status: str
    source: str
    cause: str | None = None


@dataclass
class Call:
    """One call the sandbox carries: its parties, state and timeline."""

    uuid: str
    direction: str
    from_: str
    to: str
    started: datetime
    app: Application
    caller_name: str | None = None
    request_uuid: str | None = None
    sip: dict[str, str] = field(default_factory=dict)  # SIPAuthType / SIPAuthUser / SIPSourceIP
    offset: float = 0.0
    answered_at: float | None = None
    state: str = "ringing"  # ringing, in-progress, parked, ended
    parked_since: datetime | None = None
    transfers: int = 0
    documents: int = 0
    hangup: dict[str, str] | None = None
    events: list[Event] = field(default_factory=list)
    settled: threading.Event = field(default_factory=threading.Event)  # parked or ended
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def note(self, kind: str, text: str, **data: Any) -> None:
        """Add an event at the call's current offset."""
        self.events.append(Event(self.offset, kind, text, data))

    def answer(self) -> None:
        """Mark the call answered now, unless it already was."""
        if self.answered_at is None:
            self.answered_at = self.offset
            self.state = "in-progress"

    def park(self, now: datetime) -> None:
        """Leave the call with the simulated AI agent until a Transfer or a hangup claims it."""
        with self._lock:  # a Transfer or hangup may act as soon as the state says parked
            self.parked_since = now
            self.state = "parked"
            self.settled.set()

    def claim(self) -> bool:
        """Take the call from the AI agent for a Transfer or a hangup; False if it is not there."""
        with self._lock:
            if self.state != "parked":
                return False
            self.state = "in-progress"  # claimed: a second Transfer or hangup finds it busy
            return True

    def catch_up(self, now: datetime) -> None:
        """Count the real (or advanced) time a parked call waited into its offset."""
        if self.parked_since is not None:
            waited = (now - self.parked_since).total_seconds()
            self.offset += max(0.0, waited)
            self.parked_since = None

    def finish(self) -> bool:
        """Mark the call ended; tell whether this is the first end (a hangup and the XML race)."""
        with self._lock:
            if self.state == "ended":
                return False
            self.state = "ended"
            return True

    def head(self) -> dict[str, Any]:
        """The call for listings: parties, state and outcome, without the timeline."""
        return {
            "call_uuid": self.uuid,
            "direction": self.direction,
            "from": safe_address(self.from_),
            "to": safe_address(self.to),
            "app_id": self.app.app_id,
            "started": self.started.isoformat(),
            "state": self.state,
            "sip": dict(self.sip),
            "hangup": dict(self.hangup) if self.hangup else None,
        }

    def summary(self) -> dict[str, Any]:
        """The call for JSON output: its head, and its timeline as events and as text."""
        return {
            **self.head(),
            "events": [event.as_dict() for event in self.events],
            "text": self.text(),
        }

    def text(self) -> str:
        """The timeline as readable lines."""
        parties = f"{safe_address(self.from_)} -> {safe_address(self.to)}"
        header = f"call {self.uuid} {self.direction} {parties} [{self.state}]"
        return render(header, self.events)
