"""The agent directory: agents behind SIP PBXes, grouped for dialling, with their fallbacks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sipguard.calls.hours import ALWAYS_OPEN, Hours, Status
from sipguard.secret import Secret

Strategy = Literal["simultaneous", "sequential"]
FallbackKind = Literal["voicemail", "hangup", "redirect"]


@dataclass(frozen=True)
class Agent:
    """One SIP endpoint; `username`/`password` answer its PBX's digest challenge."""

    name: str
    uri: str
    username: str | None = None
    password: Secret | None = None
    send_digits: str | None = None
    sip_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Quarantine:
    """When an agent whose PBX keeps refusing our credentials is skipped, and for how long.

    `after` consecutive sip_auth_failed (4240) / sip_auth_timeout (4250) results quarantine the
    agent for `cool_down`; its first successful call after that, or `sipguard agents release`,
    ends it.
    """

    after: int = 3
    cool_down: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Fallback:
    """What a group does when no agent took the call."""

    kind: FallbackKind
    text: str | None = None
    url: str | None = None
    voice: str | None = None
    language: str | None = None
    max_length: int = 120
    recording_callback_url: str | None = None


@dataclass(frozen=True)
class Closed:
    """What a group does outside its hours: give the caller back to the AI, or play `plan`.

    `return_to_ai` applies to an API handoff that has a return_url; any other call gets
    `plan`, which for a return is the group's own fallback.
    """

    plan: Fallback
    return_to_ai: bool = False


@dataclass(frozen=True)
class AgentGroup:
    """Agents dialled together (first to answer wins) or one after another."""

    name: str
    strategy: Strategy
    agents: tuple[Agent, ...]
    fallback: Fallback
    timeout: int = 20
    time_limit: int | None = None
    caller_id: str | None = None
    caller_name: str | None = None
    dial_music: str | None = None
    confirm_sound: str | None = None
    confirm_key: str | None = None
    hours: Hours | None = None  # None: always open
    closed: Closed | None = None  # set whenever hours are

    def status(self, now: datetime) -> Status:
        """Say whether the group takes calls at `now` and until when."""
        return self.hours.status(now) if self.hours is not None else ALWAYS_OPEN

    def open_at(self, now: datetime) -> bool:
        """Tell whether the group takes calls at `now`."""
        return self.hours is None or self.hours.open_at(now)

    def attempts(self) -> int:
        """Return how many separate <Dial>s the group makes before its fallback."""
        return len(self.agents) if self.strategy == "sequential" else 1

    def agents_for(self, attempt: int) -> tuple[Agent, ...]:
        """Return the agents rung on `attempt` (0-based): all at once, or the next one."""
        if not 0 <= attempt < self.attempts():
            raise IndexError(attempt)
        return self.agents if self.strategy == "simultaneous" else (self.agents[attempt],)

    def secrets(self) -> tuple[str, ...]:
        """Return every agent password, for the log redaction filter."""
        return tuple(a.password.reveal() for a in self.agents if a.password is not None)
