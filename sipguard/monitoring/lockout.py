"""Plivo's brute-force rule, as one pure function shared by the analytics and the sandbox.

"10 failed attempts from the same source IP within 60 seconds triggers automatic lockout";
"all calls from that IP receive 403 Forbidden — even with correct credentials"; "the lockout
resets automatically after the 60-second window expires"
(https://www.plivo.com/docs/voice/concepts/sip-authentication, "Rate Limiting"; docs/plivo.md,
SIP authentication). Where that page is silent this module decides, and says so (docs/plivo.md,
Where Plivo is silent):
- "within 60 seconds": the 10 failures span less than 60 s (the 1st and the 10th are < 60 s apart);
- the lockout runs for 60 s from the 10th failure; a call at exactly +60 s is no longer locked;
- attempts refused during a lockout do not count towards the next one, and the count starts
  afresh when a lockout ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

THRESHOLD = 10
WINDOW = timedelta(seconds=60)
DURATION = timedelta(seconds=60)


@dataclass(frozen=True)
class Lockout:
    """One lockout of one source IP: from the failure that triggered it until it lifts."""

    ip: str
    started: datetime
    until: datetime
    failures: int  # failed attempts in the window that triggered it

    def active(self, now: datetime) -> bool:
        """Tell whether calls from the IP are refused at `now`."""
        return self.started <= now < self.until


class Tracker:
    """Follow one IP's failed attempts in time order and say when a lockout starts."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self._window: deque[datetime] = deque()
        self.current: Lockout | None = None

    def idle(self, at: datetime) -> bool:
        """Tell whether the IP is neither locked nor has a failure that could still count."""
        if self.current is not None and at < self.current.until:
            return False
        return not self._window or at - self._window[-1] >= WINDOW

    def locked(self, at: datetime) -> bool:
        """Tell whether the IP is locked out at `at`."""
        return self.current is not None and self.current.active(at)

    def fail(self, at: datetime) -> Lockout | None:
        """Count a failed attempt at `at`; return the lockout it triggers, if any."""
        if self.locked(at):
            return None  # refused by the lockout itself: not an authentication attempt
        if self.current is not None and at >= self.current.until:
            self.current = None
            self._window.clear()
        self._window.append(at)
        while at - self._window[0] >= WINDOW:
            self._window.popleft()
        if len(self._window) < THRESHOLD:
            return None
        self.current = Lockout(self.ip, at, at + DURATION, len(self._window))
        self._window.clear()
        return self.current


def lockouts(failures: Iterable[tuple[str, datetime]]) -> list[Lockout]:
    """Return every lockout that (ip, time) failed attempts would trigger, oldest first."""
    trackers: dict[str, Tracker] = {}
    found = []
    for ip, at in sorted(failures, key=lambda item: (item[1], item[0])):
        tracker = trackers.setdefault(ip, Tracker(ip))
        lockout = tracker.fail(at)
        if lockout is not None:
            found.append(lockout)
    return found
